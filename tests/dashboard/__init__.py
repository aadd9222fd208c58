"""Tests of dashboard/: Streamlit AppTests and real-browser runs against Redis."""

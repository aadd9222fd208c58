"""System page: worker counters, batch latency, and the model card of each active scorer."""
from __future__ import annotations

import altair as alt
import numpy as np
import pandas as pd
import streamlit as st

from dashboard import format as fmt
from dashboard.data import Reader
from dashboard.views import model_card

NO_METRICS = "No metrics yet: the worker has not written any counters (is it running?)."


def render(reader: Reader, connection: str = "") -> None:
    """`connection`: where the page reads from, for whoever runs the system (this page is not the ward's)."""
    if connection:
        st.caption(connection)
    counters = reader.counters()
    st.subheader("Worker counters", anchor=False)
    if not counters:
        st.info(NO_METRICS)
    else:
        cols = st.columns(min(6, len(counters)))
        for i, (name, value) in enumerate(sorted(counters.items())):
            cols[i % len(cols)].metric(name.replace("_", " "), f"{value:,.0f}")
        st.caption("Totals since the worker's Redis state was created.")

    st.subheader("Batch latency", anchor=False)
    lat = reader.latencies_ms()
    if not lat:
        st.caption("No batch latencies recorded yet.")
    else:
        arr = np.array(lat)
        c = st.columns(4)
        for col, (label, v) in zip(c, (("median", np.median(arr)), ("p95", np.percentile(arr, 95)),
                                       ("max", arr.max()), ("batches", len(arr)))):
            col.metric(f"{label} (ms)" if label != "batches" else "recent batches", f"{v:,.0f}")
        df = pd.DataFrame({"batch": np.arange(1, len(arr) + 1), "ms": arr})
        st.altair_chart(alt.Chart(df).mark_line().encode(
            x=alt.X("batch:Q", title="recent batches, oldest first", axis=alt.Axis(format="d")),
            y=alt.Y("ms:Q", title="batch latency (ms)")).properties(height=160), width="stretch")

    st.subheader("Models", anchor=False)
    cards = reader.model_cards()
    if not cards:
        st.caption("No model cards in Redis yet.")
    for name, card in cards.items():
        with st.container(border=True):
            model_card.render(name, card)
    feed_age = reader.feed_age_s()
    st.caption(f"Newest data on the ward: {fmt.age(feed_age)}.")

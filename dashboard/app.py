"""Streamlit entry point (`medm2t dashboard` runs `streamlit run dashboard/app.py`).

It reads Redis only. The page body is one fragment that reruns every `dashboard_refresh_s`; the view
picker and the stay picker sit outside it, so choosing reruns the page while the data refreshes alone. The
alert action panel is a second fragment with no timer, so a person's open panel, half-filled form or error
message survives the refreshes.
Nothing accumulates in session state, and the Redis client is shared through st.cache_resource, so a
page left open for hours keeps a flat memory profile.
"""
from __future__ import annotations

import redis
import streamlit as st

from dashboard.data import Reader, connect
from dashboard.views import actions, alerts, patient, quality, system, ward
from medm2t.settings import get_settings, safe_url, with_overrides

VIEWS = ("Ward board", "Patient", "Alerts", "Quality", "System")
MAX_PROBLEMS_SHOWN = 5


@st.cache_resource(show_spinner=False)
def client(url: str) -> redis.Redis:
    return connect(url)


def _query_stay() -> int | None:
    try:
        return int(st.query_params["stay"])
    except (KeyError, ValueError):
        return None


def _unreachable(url: str, exc: Exception, refresh_s: float) -> None:
    if isinstance(exc, redis.AuthenticationError):
        from medm2t.connections import redis_error_message

        st.error(f"{redis_error_message(with_overrides(get_settings(), redis_url=url), exc)}. "
                 f"Retrying every {refresh_s:g} s.")
        return
    st.error(f"Cannot reach Redis at {safe_url(url)} ({type(exc).__name__}: {exc}). Retrying every "
             f"{refresh_s:g} s. Start it locally with `medm2t stack up`, or point the dashboard at yours "
             "with `medm2t dashboard --redis URL`.")


def main() -> None:
    settings = get_settings()
    url, refresh_s = settings.redis_url, settings.dashboard_refresh_s
    st.set_page_config(page_title="MedM2T ward monitor", page_icon="🫀", layout="wide")
    view = _sidebar(refresh_s)
    stay_id = _chosen_stay(url) if view == "Patient" else None
    st.fragment(run_every=refresh_s)(_live)(view, stay_id, url, refresh_s)
    if view in ("Ward board", "Alerts", "Patient"):
        st.fragment(_action_panel)(view, stay_id, url)


def _sidebar(refresh_s: float) -> str:
    """The view picker and the user box; returns the view chosen (also kept in the page's URL)."""
    wanted_view = st.query_params.get("view", VIEWS[0])
    with st.sidebar:
        st.title("MedM2T ward monitor")
        view = st.radio("View", VIEWS, index=VIEWS.index(wanted_view) if wanted_view in VIEWS else 0, key="view")
        actions.user_box()
        st.caption(f"Live data, refreshed every {refresh_s:g} s")
        st.caption("Research prototype, not a medical device. Model outputs are shown with their version and "
                   "calibration status.")
    st.query_params["view"] = view
    return view


def _chosen_stay(url: str) -> int | None:
    """The patient page's stay picker (outside the live fragment, so choosing reruns the page)."""
    try:
        stay_id = patient.choose_stay(Reader(client(url)).active_stay_ids(), _query_stay())
    except redis.RedisError:
        return None  # the live fragment shows the error and keeps retrying
    if stay_id is not None:
        st.query_params["stay"] = str(stay_id)
    return stay_id


def _live(view: str, stay_id: int | None, url: str, refresh_s: float) -> None:
    """The page body: a fragment that reruns every `refresh_s`."""
    reader = Reader(client(url))
    try:
        if view == "Ward board":
            st.header("Ward board", anchor=False)
            ward.render(reader)
        elif view == "Patient":
            if stay_id is None:
                if reader.active_stay_ids():
                    st.rerun()  # Redis came back or stays arrived: rebuild the stay picker
                return
            patient.render(reader, stay_id)
        elif view == "Alerts":
            st.header("Alert feed", anchor=False)
            alerts.render(reader)
        elif view == "Quality":
            st.header("Alert quality", anchor=False)
            quality.render(reader)
        else:
            st.header("System", anchor=False)
            system.render(reader, f"Data store: Redis at {safe_url(url)}; the page refreshes every {refresh_s:g} s.")
    except redis.RedisError as exc:
        _unreachable(url, exc, refresh_s)
    if reader.problems:
        extra = len(reader.problems) - MAX_PROBLEMS_SHOWN
        st.warning("Some entries in Redis could not be read and were skipped:\n\n"
                   + "\n".join(f"- {p}" for p in reader.problems[:MAX_PROBLEMS_SHOWN])
                   + (f"\n- … and {extra} more" if extra > 0 else ""))


def _action_panel(view: str, stay_id: int | None, url: str) -> None:
    """The action panel, its own fragment without a timer: the live refresh never closes it."""
    reader = Reader(client(url))
    try:
        if view == "Ward board":
            actions.panel(reader.r, ward.open_alerts(reader), "board")
        elif view == "Alerts":
            actions.panel(reader.r, alerts.open_in_feed(reader), "feed")
        elif view == "Patient" and stay_id is not None:
            row = reader.stay(stay_id)
            actions.panel(reader.r, row.open_alerts if row else [], "patient")
    except redis.RedisError:
        pass  # the live fragment says Redis is unreachable


main()

"""Acting on alerts from the dashboard: pick an open alert, then acknowledge, snooze or comment. The action goes
to risk.alert-actions.v1 (stream/alert_actions.py), exactly as `medm2t alerts ack` sends it, and the worker
records it; the page shows the worker's record, so what you see is what the audit trail holds."""
from __future__ import annotations

import time

import streamlit as st

from dashboard import format as fmt
from dashboard.data import Reader
from medm2t.events import Alert
from medm2t.settings import get_settings, with_overrides
from medm2t.vocabulary import Level

RECORD_WAIT_S = 5.0


@st.cache_resource(show_spinner=False)
def _producer(kafka_url: str):
    from medm2t.kafka import make_producer

    return make_producer(with_overrides(get_settings(), kafka_url=kafka_url))


def user_box() -> None:
    """The sidebar field that names who acts (every action is recorded under it)."""
    st.text_input("Your name (for alert actions)", key="alert_user", placeholder="e.g. nurse.kim",
                  help="Acknowledging, snoozing and commenting are recorded in the alert audit trail under this name.")


def panel(r, open_alerts: list[Alert], key: str) -> None:
    """Buttons for `open_alerts` (newest record of each): acknowledge, snooze (minutes and a reason), comment.
    The caller runs it in its own fragment, outside the live refresh: the panel stays open, and what it says
    after an action stays until the person acts again or refreshes the list."""
    if not open_alerts:
        st.caption(f"No open alerts to act on (as of {time.strftime('%H:%M:%S')}).")
        st.button("Refresh the list", key=f"{key}-refresh-empty")
        return
    policy = Reader(r).alert_policy()  # what the workers run: escalation and snooze times are the policy's
    by_id = {a.alert_id: a for a in sorted(open_alerts, key=lambda a: Level.rank_of(a.level), reverse=True)}
    with st.expander(f"Act on an open alert ({len(open_alerts)})", expanded=False):
        st.caption(f"Open alerts as of {time.strftime('%H:%M:%S')} (wall clock); the list refreshes when you act.")
        st.button("Refresh the list", key=f"{key}-refresh")
        chosen = st.selectbox("Alert", list(by_id), key=f"{key}-alert", format_func=lambda i: _label(by_id[i]))
        alert = by_id[chosen]
        ack, snooze, comment = st.columns(3)
        with ack:
            with st.form(f"{key}-ack", border=False):
                st.caption("Acknowledge: you have seen it; it stops escalating at this level.")
                if st.form_submit_button("Acknowledge", disabled=alert.acknowledged_by is not None):
                    _send(r, alert, "ack")
        with snooze:
            with st.form(f"{key}-snooze", border=False, clear_on_submit=True):
                minutes = st.number_input("Snooze for (clinical minutes)", min_value=5, max_value=int(policy.snooze_max_min),
                                          value=min(30, int(policy.snooze_max_min)), step=5, key=f"{key}-minutes")
                reason = st.text_input("Reason (required)", key=f"{key}-snooze-reason")
                if st.form_submit_button("Snooze"):
                    _send(r, alert, "snooze", reason, float(minutes))
        with comment:
            with st.form(f"{key}-comment", border=False, clear_on_submit=True):
                note = st.text_input("Comment", key=f"{key}-comment-text")
                if st.form_submit_button("Add comment"):
                    _send(r, alert, "comment", note)
        st.caption(f"Clinical time is the replay's clock. Urgent and emergency alerts nobody acknowledges escalate "
                   f"after {policy.escalate_after_min:g} min; a snooze lasts at most {policy.snooze_max_min:g} "
                   f"min and a higher level breaks through it.")


def _label(a: Alert) -> str:
    what = fmt.alert_name(a)
    return f"stay {a.stay_id} · {a.level} · {what} · {fmt.lifecycle(a) or fmt.alert_state(a.state)} · record of {a.at:%d %b %H:%M}"


def _send(r, alert: Alert, action: str, reason: str | None = None, minutes: float | None = None) -> None:
    from pydantic import ValidationError

    from stream.alert_actions import UnknownAlert, new_action, recorded, send

    user = (st.session_state.get("alert_user") or "").strip()
    if not user:
        st.error("Enter your name in the sidebar first: every action is recorded under it.")
        return
    try:
        act = new_action(r, alert.alert_id, action, user, reason, minutes)
    except ValidationError as exc:
        st.error(f"Not sent: {exc.errors()[0]['msg'].removeprefix('Value error, ')}.")
        return
    except UnknownAlert as exc:
        st.error(f"Not sent: {exc}.")
        return
    try:
        send(_producer(get_settings().kafka_url), act)
    except Exception as exc:  # noqa: BLE001 - broker down, timeouts: the user needs to know it did not go out
        _producer.clear()
        st.error(f"Not sent: the Kafka broker at {get_settings().kafka_url} did not take it ({type(exc).__name__}: {exc}).")
        return
    record = recorded(r, act, RECORD_WAIT_S)
    if record is None:
        st.warning(f"Sent, but the worker has not recorded it within {RECORD_WAIT_S:g} s (is it running?). "
                   "If the worker rejected it, the reason is in its dead-letter log.")
    else:
        st.success(f"Recorded: {record.state} by {record.by} · {record.reason}")

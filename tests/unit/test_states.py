"""Tests for homing.core.states: outcomes and the delivery state machine."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from homing.core.models import Delivery, DeliveryState, Trigger
from homing.core.states import ALLOWED, Outcome, cancel, is_success, transition
from homing.errors import InvalidTransition

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
LATER = NOW + timedelta(seconds=5)
OK = Outcome(status=200, failure_class=None)
FAIL = Outcome(status=500, failure_class="http_status", message="HTTP 500")


def make_delivery(state: DeliveryState = DeliveryState.SENDING, attempts: int = 0) -> Delivery:
    return Delivery(
        id="dlv_1",
        org_id="org_1",
        app_id="app_1",
        msg_id="msg_1",
        endpoint_id="ep_1",
        state=state,
        attempts=attempts,
        trigger=Trigger.SCHEDULED,
        next_attempt_at=None if state is DeliveryState.SENDING else NOW,
        lease_until=NOW + timedelta(seconds=45),
        leased_by="worker-1",
        created_at=NOW,
        updated_at=NOW,
    )


@pytest.mark.parametrize("status", [200, 201, 204, 299])
def test_2xx_without_failure_is_success(status: int) -> None:
    """Any 2xx status without a failure class is a success."""
    assert is_success(Outcome(status=status, failure_class=None))


@pytest.mark.parametrize(
    ("status", "failure"),
    [(199, None), (300, "redirect"), (302, "redirect"), (404, "http_status"), (0, "timeout")],
)
def test_everything_else_is_failure(status: int, failure: str | None) -> None:
    """1xx, 3xx, 4xx/5xx and no response at all are failures."""
    assert not is_success(Outcome(status=status, failure_class=failure))  # type: ignore[arg-type]


def test_2xx_with_failure_class_is_not_success() -> None:
    """A 2xx whose answer was unreadable still counts as failed."""
    assert not is_success(Outcome(status=200, failure_class="invalid_response"))


def test_outcome_defaults_are_empty() -> None:
    """An outcome needs only a status and a failure class."""
    outcome = Outcome(status=0, failure_class="dns")
    assert (outcome.message, outcome.body, outcome.duration_ms) == ("", "", 0)
    assert outcome.retry_after is None
    assert outcome.request_headers == {}


def test_success_moves_sending_to_success() -> None:
    """A successful try finishes the delivery and counts the attempt."""
    moved = transition(make_delivery(attempts=2), OK, LATER, LATER + timedelta(hours=1))
    assert moved.state is DeliveryState.SUCCESS
    assert moved.attempts == 3
    assert moved.next_attempt_at is None
    assert moved.updated_at == LATER


def test_failure_with_next_time_goes_back_to_pending() -> None:
    """A failed try with a retry time left makes the delivery pending again, due then."""
    due = LATER + timedelta(minutes=5)
    moved = transition(make_delivery(), FAIL, LATER, due)
    assert moved.state is DeliveryState.PENDING
    assert moved.next_attempt_at == due
    assert moved.attempts == 1


def test_failure_without_next_time_fails_the_delivery() -> None:
    """A failed try with no retry left fails the delivery for good."""
    moved = transition(make_delivery(attempts=7), FAIL, LATER, None)
    assert moved.state is DeliveryState.FAILED
    assert moved.next_attempt_at is None
    assert moved.attempts == 8


def test_transition_keeps_the_lease_for_storage_to_check() -> None:
    """The lease owner is kept so storage can check it when recording the move."""
    moved = transition(make_delivery(), OK, LATER, None)
    assert moved.leased_by == "worker-1"
    assert moved.id == "dlv_1"


@pytest.mark.parametrize(
    "state",
    [DeliveryState.PENDING, DeliveryState.SUCCESS, DeliveryState.FAILED, DeliveryState.CANCELED],
)
def test_transition_needs_a_sending_delivery(state: DeliveryState) -> None:
    """Only a claimed (sending) delivery can record the result of a try."""
    with pytest.raises(InvalidTransition):
        transition(make_delivery(state), OK, LATER, None)


@pytest.mark.parametrize("state", [DeliveryState.PENDING, DeliveryState.SENDING])
def test_cancel_from_pending_or_sending(state: DeliveryState) -> None:
    """A pending or claimed delivery can be canceled without counting an attempt."""
    moved = cancel(make_delivery(state, attempts=1), LATER)
    assert moved.state is DeliveryState.CANCELED
    assert moved.attempts == 1
    assert moved.next_attempt_at is None
    assert moved.updated_at == LATER


@pytest.mark.parametrize(
    "state", [DeliveryState.SUCCESS, DeliveryState.FAILED, DeliveryState.CANCELED]
)
def test_finished_deliveries_cannot_be_canceled(state: DeliveryState) -> None:
    """A finished delivery stays finished."""
    with pytest.raises(InvalidTransition):
        cancel(make_delivery(state), LATER)


def test_finished_states_allow_no_move() -> None:
    """The table has an entry for every state and none out of the final ones."""
    assert set(ALLOWED) == set(DeliveryState)
    for state in (DeliveryState.SUCCESS, DeliveryState.FAILED, DeliveryState.CANCELED):
        assert ALLOWED[state] == frozenset()

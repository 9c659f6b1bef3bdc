"""Webhook security by hand (scheduler/service/security.py): Standard Webhooks signatures
against a published example, every way a request is refused, bearer tokens, secrets from
the environment or a file, the rate limit and the reused-id check, and the JSON depth
guard. Pure functions: no server (tests/test_api_hardening.py drives the same code
through the daemon's HTTP API)."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from scheduler.service.security import (
    AuthError,
    RateLimiter,
    RecentBodies,
    SecretConfigError,
    check_bearer,
    json_depth_over,
    read_secret_list,
    secret_problems,
    sign,
    verify_webhook,
    webhook_secrets,
)

# The example message of the Standard Webhooks reference libraries' tests (the same
# secret, id, timestamp and body give this signature in every one of them).
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
MSG_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
TS = 1614265330
BODY = b'{"test": 2432232314}'
EXPECTED = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def _headers(sig: str = EXPECTED, msg_id: str = MSG_ID, ts: str = str(TS)) -> dict[str, str]:
    return {"webhook-id": msg_id, "webhook-timestamp": ts, "webhook-signature": sig}


def _refused(status: int, words: str, **kw: object) -> None:
    args: dict[str, object] = {
        "secrets": [SECRET],
        "headers": _headers(),
        "body": BODY,
        "now": TS,
    }
    args.update(kw)
    with pytest.raises(AuthError) as exc:
        verify_webhook(**args)  # type: ignore[arg-type]
    assert exc.value.status == status and words in str(exc.value), str(exc.value)


def test_the_published_example_signs_and_verifies() -> None:
    assert sign(SECRET, MSG_ID, TS, BODY) == EXPECTED
    assert verify_webhook([SECRET], _headers(), BODY, now=TS) == MSG_ID


def test_a_plain_string_secret_is_its_bytes() -> None:
    sig = sign("not-base64 at all", MSG_ID, TS, BODY)
    assert verify_webhook(["not-base64 at all"], _headers(sig), BODY, now=TS) == MSG_ID
    assert sig != sign("not-base64 at al", MSG_ID, TS, BODY)


def test_rotation_any_listed_secret_and_any_listed_signature() -> None:
    other = "whsec_" + "QUJD" * 8
    assert verify_webhook([other, SECRET], _headers(), BODY, now=TS) == MSG_ID
    both = f"{sign(other, MSG_ID, TS, BODY)} {EXPECTED}"
    assert verify_webhook([SECRET], _headers(both), BODY, now=TS) == MSG_ID
    _refused(401, "does not match", secrets=[other])


@pytest.mark.parametrize(
    ("headers", "words"),
    [
        ({"webhook-timestamp": str(TS), "webhook-signature": EXPECTED}, "webhook-id"),
        ({"webhook-id": MSG_ID, "webhook-signature": EXPECTED}, "webhook-timestamp"),
        ({"webhook-id": MSG_ID, "webhook-timestamp": str(TS)}, "webhook-signature"),
        ({}, "webhook-id, webhook-timestamp, webhook-signature"),
        (_headers(msg_id=""), "missing header(s) webhook-id (Standard"),
    ],
)
def test_missing_headers_are_named(headers: dict[str, str], words: str) -> None:
    _refused(401, words, headers=headers)


def test_each_refusal_says_why() -> None:
    _refused(401, "longer than 200", headers=_headers(msg_id="x" * 201))
    long_ok = "x" * 200
    sig = sign(SECRET, long_ok, TS, BODY)
    assert verify_webhook([SECRET], _headers(sig, msg_id=long_ok), BODY, now=TS) == long_ok
    _refused(401, "'soon' is not integer Unix seconds", headers=_headers(ts="soon"))
    # the timestamp's side of the clock in words (before: "+301 s" for one 301 s old)
    _refused(
        401, f"webhook-timestamp {TS} is 301 s in the past by this server's clock", now=TS + 301
    )
    _refused(401, f"webhook-timestamp {TS} is 301 s in the future by this", now=TS - 301)
    assert verify_webhook([SECRET], _headers(), BODY, now=TS + 300) == MSG_ID
    assert verify_webhook([SECRET], _headers(), BODY, now=TS - 300) == MSG_ID
    _refused(401, "allowed +-60 s", now=TS + 61, tolerance_s=60)
    # the bad-input walk (session 23, L11): a 40-digit timestamp was "1e+40"-ish float
    # arithmetic in words ("10000000000000000303786028427003666890752 s in the future")
    far = "9" * 40
    _refused(401, f"{far} is {int(far) - TS} s in the future", headers=_headers(ts=far))
    _refused(401, "does not match", body=BODY + b" ")
    _refused(401, "does not match", headers=_headers(EXPECTED.replace("v1,", "v2,")))
    _refused(401, "does not match", headers=_headers(msg_id=MSG_ID + "x"))


def test_a_whsec_secret_must_be_base64_with_a_key() -> None:
    with pytest.raises(ValueError, match="base64 after the prefix"):
        sign("whsec_not base64!", MSG_ID, TS, BODY)
    with pytest.raises(ValueError, match="needs a key after the prefix"):
        sign("whsec_", MSG_ID, TS, BODY)


def test_bearer_tokens() -> None:
    check_bearer(["t1", "t2"], "Bearer t2", "OpenADR")
    check_bearer(["t1"], "bearer t1", "OpenADR")  # RFC 9110: the scheme is case-insensitive
    check_bearer(["t1"], "  Bearer   t1  ", "OpenADR")
    for header, status, words in [
        (None, 401, "OpenADR needs 'Authorization: Bearer <token>'"),
        ("Basic t1", 401, "needs 'Authorization"),
        ("Bearer ", 401, "needs 'Authorization"),
        ("Bearer t3", 403, "not valid for OpenADR"),
        ("Bearer t1x", 403, "not valid"),
    ]:
        with pytest.raises(AuthError) as exc:
            check_bearer(["t1"], header, "OpenADR")
        assert exc.value.status == status and words in str(exc.value)
    with pytest.raises(AuthError):
        check_bearer([], "Bearer t1", "OpenADR")


def test_secrets_from_the_environment_and_a_file(tmp_path: Path) -> None:
    env = {"S": " a , b,, "}
    assert read_secret_list("S", None, env) == ["a", "b"]
    f = tmp_path / "s"
    f.write_text("c\nd, e\n\n")
    assert read_secret_list("S", "SF", {**env, "SF": str(f)}) == ["a", "b", "c", "d", "e"]
    assert read_secret_list("S", "SF", {"SF": str(f)}) == ["c", "d", "e"]
    assert read_secret_list("S", "SF", {}) == []
    f.write_text("  \n")
    with pytest.raises(SecretConfigError, match="the secret file is empty"):
        read_secret_list("S", "SF", {"SF": str(f)})
    with pytest.raises(SecretConfigError, match=r"cannot read the secret file .*unset SF"):
        read_secret_list("S", "SF", {"SF": str(tmp_path / "missing")})
    f.write_bytes(b"\xff\xfe")
    with pytest.raises(SecretConfigError, match="not UTF-8 text"):
        read_secret_list("S", "SF", {"SF": str(f)})


def test_secret_problems_name_the_entry_never_a_good_value() -> None:
    problems = secret_problems("W", "WF", True, {"W": f"{SECRET},whsec_change-me,whsec_!!"})
    assert len(problems) == 2
    assert problems[0].startswith("W entry 2 of 3 is the shipped placeholder")
    assert problems[1].startswith("W entry 3 of 3: a whsec_ secret must be base64")
    assert all(SECRET not in p for p in problems)
    assert secret_problems("T", "TF", False, {"T": "<token>"})[0].startswith("T is the shipped")
    token = "whsec_!!-a-token-not-base64"
    assert secret_problems("T", "TF", False, {"T": token}) == []  # a token, not base64
    assert secret_problems("T", "TF", False, {"TF": "/nonexistent"})[0].startswith("TF=")


def test_a_secret_short_enough_to_guess_is_refused() -> None:
    """The bad-input walk (session 23, M9): GRIDSCHED_WEBHOOK_SECRET=whsec_YWJj (3 bytes)
    and GRIDSCHED_OPENADR_TOKENS=x started the daemon without a word. One signed request
    is enough to find a 3-byte HMAC key offline; a one-character token is one guess."""
    short = "whsec_" + base64.b64encode(b"k" * 15).decode()
    problems = secret_problems("W", "WF", True, {"W": f"{SECRET},whsec_YWJj,{short}"})
    assert [p.split(":")[0] for p in problems] == ["W entry 2 of 3", "W entry 3 of 3"]
    assert "3 bytes" in problems[0] and "16 or more" in problems[0], problems
    assert "head -c 24 /dev/urandom" in problems[0]
    assert (
        secret_problems("W", "WF", True, {"W": "whsec_" + base64.b64encode(b"k" * 16).decode()})
        == []
    )
    said = secret_problems("T", "TF", False, {"T": "x"})
    assert said and said[0].startswith("T: 1 character") and "16 or more" in said[0], said
    assert secret_problems("T", "TF", False, {"T": "t" * 16}) == []
    with pytest.raises(SecretConfigError, match="16 or more"):
        webhook_secrets({"GRIDSCHED_WEBHOOK_SECRET": "plainsecret"})


def test_webhook_secrets_refuse_a_placeholder() -> None:
    env = {"GRIDSCHED_WEBHOOK_SECRET": SECRET}
    assert webhook_secrets(env) == [SECRET]
    with pytest.raises(SecretConfigError, match="placeholder"):
        webhook_secrets({"GRIDSCHED_WEBHOOK_SECRET": "replace_me"})


def test_the_rate_limit_is_a_bucket_per_client() -> None:
    r = RateLimiter(rate=2.0, burst=3.0, max_clients=2)
    assert [r.allow("a", now=0.0) for _ in range(4)] == [True, True, True, False]
    assert r.allow("b", now=0.0)  # another client has its own bucket
    assert not r.allow("a", now=0.49)  # 0.98 of a token
    assert r.allow("a", now=0.5)  # refilled at 2 per second: one whole token
    assert not r.allow("a", now=0.5)
    assert r.allow("a", now=100.0) and r.allow("a", now=100.0) and r.allow("a", now=100.0)
    assert not r.allow("a", now=100.0)  # never more than the burst
    r.allow("c", now=100.0)  # a third client: the least recently seen ("b") is dropped
    assert len(r) == 2
    assert [r.allow("b", now=100.0) for _ in range(3)] == [True, True, True]  # full again


def test_a_reused_webhook_id_with_another_body_is_told_apart() -> None:
    seen = RecentBodies(keep_s=10.0, max_ids=2)
    assert seen.check("a", b"one", now=0.0)
    assert seen.check("a", b"one", now=1.0)  # a retry: the same body
    assert not seen.check("a", b"two", now=2.0)  # the same id, another body
    seen.forget("a")
    assert seen.check("a", b"two", now=3.0)  # refused before: the id is free again
    assert seen.check("b", b"x", now=20.0)  # "a" (seen at 3 s) is past keep_s: forgotten
    assert seen.check("a", b"one", now=20.0)
    assert seen.check("c", b"y", now=20.0)  # a third id: the oldest ("b") is dropped
    assert seen.check("b", b"other", now=20.0)


def test_json_depth_is_counted_outside_strings_only() -> None:
    assert not json_depth_over(b'{"a": [1, {"b": 2}]}', 3)
    assert json_depth_over(b'{"a": [1, {"b": [2]}]}', 3)
    assert not json_depth_over(b'{"a": "[[[[[[[[{{{{"}', 1)  # brackets in a string
    assert not json_depth_over(b'{"a": "\\"[[[[["}', 1)  # an escaped quote stays in it
    assert json_depth_over(b'{"a": "\\\\"}[[', 1)  # an escaped backslash: the string ends
    assert not json_depth_over(b"[][][][]", 1)  # closing brackets bring depth back down
    assert json_depth_over(b"[" * 33, 32)


def test_every_secret_and_every_signature_is_tried_not_only_the_last() -> None:
    other = "whsec_" + "QUJD" * 8
    # the matching secret first, another after it; the matching signature first
    assert verify_webhook([SECRET, other], _headers(), BODY, now=TS) == MSG_ID
    first = f"{EXPECTED} {sign(other, MSG_ID, TS, BODY)}"
    assert verify_webhook([SECRET], _headers(first), BODY, now=TS) == MSG_ID
    check_bearer(["t1", "t2"], "Bearer t1", "OpenADR")  # the first token, not the last


def test_refusals_word_for_word() -> None:
    _refused(401, "webhook-id longer than 200 characters", headers=_headers(msg_id="x" * 201))
    _refused(
        401,
        "webhook-signature does not match (HMAC-SHA256 of id.timestamp.body)",
        body=b"",
    )
    with pytest.raises(ValueError, match=r"\(A-Z a-z 0-9 \+ / =\)"):
        sign("whsec_!", MSG_ID, TS, BODY)
    with pytest.raises(ValueError, match=r"^a whsec_ secret needs a key after the prefix$"):
        sign("whsec_", MSG_ID, TS, BODY)
    with pytest.raises(AuthError, match="OpenADR needs"):
        check_bearer(["XXXX"], None, "OpenADR")  # no header is no token, whatever is set


def test_the_webhook_secret_file_variable_and_its_checks(tmp_path: Path) -> None:
    f = tmp_path / "w"
    f.write_text(SECRET + "\n")
    assert webhook_secrets({"GRIDSCHED_WEBHOOK_SECRET_FILE": str(f)}) == [SECRET]
    f.write_text("whsec_!!\n")
    with pytest.raises(SecretConfigError, match="must be base64"):
        webhook_secrets({"GRIDSCHED_WEBHOOK_SECRET_FILE": str(f)})
    with pytest.raises(SecretConfigError, match="must be base64"):
        webhook_secrets({"GRIDSCHED_WEBHOOK_SECRET": "whsec_!!"})
    with pytest.raises(SecretConfigError, match=r"GRIDSCHED_WEBHOOK_SECRET_FILE=.*No such file"):
        webhook_secrets({"GRIDSCHED_WEBHOOK_SECRET_FILE": str(tmp_path / "none")})
    with pytest.raises(SecretConfigError) as exc:
        webhook_secrets({"GRIDSCHED_WEBHOOK_SECRET": "change_me,<x>"})
    text = str(exc.value)  # each problem said, joined by "; "
    assert "entry 1 of 2 is the shipped placeholder" in text
    assert "sender; GRIDSCHED_WEBHOOK_SECRET entry 2 of 2" in text


def test_secret_problems_hint_how_to_generate_the_right_kind() -> None:
    webhook = secret_problems("W", "WF", True, {"W": "change-me"})[0]
    token = secret_problems("T", "TF", False, {"T": "change-me"})[0]
    assert "whsec_$(head -c 24 /dev/urandom | base64)" in webhook
    assert "tr -d /+=" in token and "whsec_" not in token
    two = secret_problems("W", "WF", True, {"W": f"change-me,{SECRET}"})
    assert two[0].startswith("W entry 1 of 2 is")
    assert secret_problems("W", "WF", True, {"W": "whsec_<secret>"})  # a placeholder inside


def test_a_dropped_client_is_the_least_recently_seen() -> None:
    r = RateLimiter(rate=0.001, burst=1.0, max_clients=1)
    assert r.allow("a", now=0.0) and r.allow("b", now=0.0)  # "a" is dropped, "b" kept
    assert not r.allow("b", now=0.0)  # "b"'s spent bucket was kept
    seen = RecentBodies(keep_s=100.0, max_ids=1)
    assert seen.check("a", b"1", now=0.0) and seen.check("b", b"2", now=0.0)
    assert not seen.check("b", b"other", now=0.0)  # "b" kept: another body is told apart
    assert seen.check("a", b"other", now=0.0)  # "a" was dropped, not "b"


def test_recent_bodies_keep_ids_for_keep_s_exactly_and_forget_on_request() -> None:
    seen = RecentBodies(keep_s=10.0)
    assert seen.max_ids == 100_000
    assert seen.check("a", b"1", now=0.0)
    assert not seen.check("a", b"2", now=10.0)  # exactly keep_s old: still known
    assert seen.check("a", b"2", now=10.1)  # older: forgotten
    seen.forget("missing")  # nothing to forget is fine
    assert RecentBodies().check("x", b"1")  # on the monotonic clock when none is given


def test_closing_braces_bring_the_depth_down() -> None:
    assert not json_depth_over(b"{}{}{}{}", 1)
    assert not json_depth_over(b'{"a":{}}{"b":{}}', 2)

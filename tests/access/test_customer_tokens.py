"""Customer tokens: JWTs minted by the company's backend that let an app call the client
routes (offers, assignments, referral code, exposures) for one customer only.

Keys are real RSA / EC key pairs generated here; tokens are minted the way the README shows
(PyJWT), except the attacks, which are assembled by hand as an attacker would."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from django.test import Client
from django.urls import reverse
from rest_framework.test import APIClient

from access.models import CustomerSigningKey
from access.services import signing_key_create, signing_key_revoke
from campaigns.models import ChannelPolicy, Coupon, ReferralCode
from experiments import services as experiment_services
from segments.models import Customer, Event
from tests.campaigns.builders import campaign, run_broadcast
from tests.experiments.conftest import variant_specs
from tests.factories import CustomerFactory

pytestmark = pytest.mark.django_db


def _pem(private_key: Any) -> str:
    return (
        private_key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


@pytest.fixture(scope="module")
def rsa_private() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ec_private() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture
def rs256_key(rsa_private: rsa.RSAPrivateKey) -> CustomerSigningKey:
    key, secret = signing_key_create(name="app backend", algorithm="RS256", public_key=_pem(rsa_private))
    assert secret == ""
    return key


def _claims(sub: str, *, lifetime: int = 300, **extra: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"sub": sub, "iat": now, "exp": now + lifetime, **extra}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _hand_made(header: dict[str, Any], claims: dict[str, Any], sign: Callable[[bytes], bytes]) -> str:
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    return f"{signing_input}.{_b64(sign(signing_input.encode()))}"


def _client(token: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client


@pytest.fixture
def two_customers_with_offers(db: None) -> tuple[Customer, Customer]:
    ChannelPolicy.objects.update(daily_cap=None, weekly_cap=None, quiet_start=None, quiet_end=None)
    alice, bob = CustomerFactory(external_id="alice"), CustomerFactory(external_id="bob")
    run_broadcast(campaign(key="inapp", channels=("in_app",)))
    experiment = experiment_services.experiment_create(
        key="checkout", name="Checkout", variants=variant_specs(["0.5", "0.5"]), coverage=Decimal("1")
    )
    experiment_services.experiment_start(experiment=experiment)
    assert Coupon.objects.filter(customer__in=[alice, bob]).count() == 2
    return alice, bob


def test_customer_token__own_customer__reads_offers_assignments_referral_code_and_logs_exposure(
    two_customers_with_offers: tuple[Customer, Customer], rs256_key: CustomerSigningKey, rsa_private: Any
) -> None:
    # Given a token for alice signed with the backend's RSA private key
    alice, bob = two_customers_with_offers
    token = jwt.encode(_claims("alice"), rsa_private, algorithm="RS256", headers={"kid": rs256_key.kid})
    client = _client(token)

    # When the app reads alice's offers, assignments and referral code
    offers = client.get("/api/v1/customers/alice/offers")
    assignments = client.get("/api/v1/customers/alice/assignments?expose=false")
    referral = client.get("/api/v1/customers/alice/referral-code")

    # Then it sees alice's coupon (not bob's), her variant and her code
    assert offers.status_code == 200, offers.content
    assert offers.json()["results"][0]["coupon_code"] == Coupon.objects.get(customer=alice).code
    assert Coupon.objects.get(customer=bob).code not in offers.content.decode()
    assert assignments.status_code == 200, assignments.content
    decision = next(d for d in assignments.json()["results"] if d["in_experiment"])
    assert referral.status_code == 200 and referral.json() == {
        "customer_id": "alice",
        "code": ReferralCode.objects.get(customer=alice).code,
    }

    # And it logs alice's exposure
    exposure = client.post(
        "/api/v1/exposures",
        {"customer_id": "alice", "experiment": decision["experiment"], "variant": decision["variant"]},
        format="json",
    )
    assert exposure.status_code == 200, exposure.content
    assert exposure.json()["exposure_count"] == 1


@pytest.mark.parametrize("algorithm", ["HS256", "ES256"])
def test_customer_token__hs256_and_es256_keys__accepted(algorithm: str, ec_private: Any) -> None:
    CustomerFactory(external_id="alice")
    public_key = _pem(ec_private) if algorithm == "ES256" else ""
    key, secret = signing_key_create(name="k", algorithm=algorithm, public_key=public_key)
    signer = secret if algorithm == "HS256" else ec_private
    token = jwt.encode(_claims("alice"), signer, algorithm=algorithm, headers={"kid": key.kid})

    response = _client(token).get("/api/v1/customers/alice/referral-code")

    assert response.status_code == 200, response.content
    assert CustomerSigningKey.objects.get(pk=key.pk).last_used_at is not None


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("get", "/api/v1/customers/bob/offers", None),
        ("get", "/api/v1/customers/bob/assignments", None),
        ("get", "/api/v1/customers/bob/referral-code", None),
        ("get", "/api/v1/customers/nobody/offers", None),
        ("post", "/api/v1/exposures", {"customer_id": "bob", "experiment": "inapp", "variant": "treatment"}),
        ("post", "/api/v1/exposures", {"customer_id": " alice", "experiment": "inapp", "variant": "treatment"}),
    ],
)
def test_customer_token__another_customer__403_and_nothing_read_or_written(
    two_customers_with_offers: tuple[Customer, Customer],
    rs256_key: CustomerSigningKey,
    rsa_private: Any,
    method: str,
    path: str,
    body: dict[str, str] | None,
) -> None:
    _, bob = two_customers_with_offers
    token = jwt.encode(_claims("alice"), rsa_private, algorithm="RS256", headers={"kid": rs256_key.kid})
    events_before = Event.objects.count()

    response = getattr(_client(token), method)(path, body, format="json")

    # 403 whether or not the customer exists ("nobody"): checked before any lookup.
    assert response.status_code == 403, response.content
    assert "customer it names" in response.json()["detail"]
    assert Coupon.objects.get(customer=bob).code not in response.content.decode()
    assert not ReferralCode.objects.filter(customer=bob).exists()
    assert Event.objects.count() == events_before


@pytest.fixture(scope="module")
def other_rsa() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _refused_tokens(rs256_key: CustomerSigningKey, rsa_private: Any, other_rsa: Any) -> dict[str, str]:
    kid = {"kid": rs256_key.kid}
    pem = rs256_key.public_key.encode()
    return {
        "expired": jwt.encode(
            {"sub": "alice", "iat": int(time.time()) - 600, "exp": int(time.time()) - 300},
            rsa_private,
            algorithm="RS256",
            headers=kid,
        ),
        "wrong signature": jwt.encode(_claims("alice"), other_rsa, algorithm="RS256", headers=kid),
        # The classic confusion attack: HS256 with the (public) RSA key as the HMAC secret.
        "alg confusion": _hand_made(
            {"alg": "HS256", "typ": "JWT", **kid},
            _claims("alice"),
            lambda data: hmac.new(pem, data, hashlib.sha256).digest(),
        ),
        "alg none": _hand_made({"alg": "none", "typ": "JWT", **kid}, _claims("alice"), lambda data: b""),
        "missing exp": jwt.encode(
            {"sub": "alice", "iat": int(time.time())}, rsa_private, algorithm="RS256", headers=kid
        ),
        "missing iat": jwt.encode(
            {"sub": "alice", "exp": int(time.time()) + 60}, rsa_private, algorithm="RS256", headers=kid
        ),
        "lifetime too long": jwt.encode(
            _claims("alice", lifetime=24 * 3600), rsa_private, algorithm="RS256", headers=kid
        ),
        "unexpected audience": jwt.encode(
            _claims("alice", aud="someone-else"), rsa_private, algorithm="RS256", headers=kid
        ),
        "unknown kid": jwt.encode(_claims("alice"), rsa_private, algorithm="RS256", headers={"kid": "nope"}),
        "no kid": jwt.encode(_claims("alice"), rsa_private, algorithm="RS256"),
        "not a jwt": "not-a-token",
    }


@pytest.mark.parametrize(
    ("case", "says"),
    [
        ("expired", "expired"),
        ("wrong signature", "signature"),
        ("alg confusion", "RS256 tokens only"),
        ("alg none", "RS256 tokens only"),
        ("missing exp", "'exp'"),
        ("missing iat", "'iat'"),
        ("lifetime too long", "at most 3600 s"),
        ("unexpected audience", "audience"),
        ("unknown kid", "Unknown signing key"),
        ("no kid", "kid"),
        ("not a jwt", "Malformed"),
    ],
)
def test_customer_token__refused__401_json_saying_why(
    two_customers_with_offers: tuple[Customer, Customer],
    rs256_key: CustomerSigningKey,
    rsa_private: Any,
    other_rsa: Any,
    case: str,
    says: str,
) -> None:
    token = _refused_tokens(rs256_key, rsa_private, other_rsa)[case]

    response = _client(token).get("/api/v1/customers/alice/offers")

    assert response.status_code == 401, (case, response.content)
    assert response["Content-Type"] == "application/json"
    assert says in response.json()["detail"], response.json()
    assert Coupon.objects.get(customer__external_id="alice").code not in response.content.decode()


def test_customer_token__revoked_key__401(
    two_customers_with_offers: tuple[Customer, Customer], rs256_key: CustomerSigningKey, rsa_private: Any
) -> None:
    token = jwt.encode(_claims("alice"), rsa_private, algorithm="RS256", headers={"kid": rs256_key.kid})
    client = _client(token)
    assert client.get("/api/v1/customers/alice/offers").status_code == 200

    signing_key_revoke(key=rs256_key)
    response = client.get("/api/v1/customers/alice/offers")

    assert response.status_code == 401 and "revoked" in response.json()["detail"]


def test_customer_token__audience_required_by_key__matching_aud_accepted_other_refused(rsa_private: Any) -> None:
    CustomerFactory(external_id="alice")
    key, _ = signing_key_create(name="k", algorithm="RS256", public_key=_pem(rsa_private), audience="shop-app")

    def call(**claims: Any) -> int:
        token = jwt.encode(_claims("alice", **claims), rsa_private, algorithm="RS256", headers={"kid": key.kid})
        return _client(token).get("/api/v1/customers/alice/referral-code").status_code

    assert call(aud="shop-app") == 200
    assert call(aud="other") == 401
    assert call() == 401


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("post", "/api/v1/events", {"customer_id": "alice", "event_type": "order", "event_id": "e1"}),
        ("get", "/api/v1/customers/alice/segments", None),
        ("put", "/api/v1/customers/alice", {"email": "a@example.com"}),
        ("get", "/api/v1/experiments/inapp/report", None),
        ("post", "/api/v1/coupons/ANY-CODE/redeem", {"customer_id": "alice"}),
    ],
)
def test_customer_token__server_only_route__403(
    two_customers_with_offers: tuple[Customer, Customer],
    rs256_key: CustomerSigningKey,
    rsa_private: Any,
    method: str,
    path: str,
    body: dict[str, str] | None,
) -> None:
    token = jwt.encode(_claims("alice"), rsa_private, algorithm="RS256", headers={"kid": rs256_key.kid})
    events_before = Event.objects.count()

    response = getattr(_client(token), method)(path, body, format="json")

    assert response.status_code == 403, response.content
    assert "server API key" in response.json()["detail"]
    assert Event.objects.count() == events_before


def test_customer_token__key_without_events_write__exposure_403(rsa_private: Any) -> None:
    CustomerFactory(external_id="alice")
    key, _ = signing_key_create(name="k", algorithm="RS256", public_key=_pem(rsa_private), scopes=["offers:read"])
    token = jwt.encode(_claims("alice"), rsa_private, algorithm="RS256", headers={"kid": key.kid})
    client = _client(token)

    response = client.post(
        "/api/v1/exposures", {"customer_id": "alice", "experiment": "x", "variant": "y"}, format="json"
    )

    assert response.status_code == 403 and "'events:write'" in response.json()["detail"]
    assert client.get("/api/v1/customers/alice/referral-code").status_code == 200


@pytest.mark.parametrize(
    ("algorithm", "material", "field_says"),
    [
        ("RS256", "private", "private key"),
        ("RS256", "ec", "RSA public key"),
        ("RS256", "small-rsa", "2048 bits"),
        ("ES256", "rsa", "P-256"),
        ("ES256", "garbage", "Not a PEM public key"),
        ("RS256", "", "needs the PEM public key"),
        ("HS256", "rsa", "leave the public key empty"),
    ],
)
def test_signing_key_create__unfit_key_material__refused_naming_public_key(
    algorithm: str, material: str, field_says: str, rsa_private: Any, ec_private: Any
) -> None:
    from django.core.exceptions import ValidationError

    from access.services import signing_key_create as create

    pem = {
        "private": rsa_private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode(),
        "ec": _pem(ec_private),
        "rsa": _pem(rsa_private),
        "small-rsa": _pem(rsa.generate_private_key(public_exponent=65537, key_size=1024)),
        "garbage": "-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----",
        "": "",
    }[material]
    with pytest.raises(ValidationError) as info:
        create(name="k", algorithm=algorithm, public_key=pem)
    assert field_says in info.value.message_dict["public_key"][0]
    assert not CustomerSigningKey.objects.exists()


def test_signing_key_create__server_scope__refused() -> None:
    from django.core.exceptions import ValidationError

    with pytest.raises(ValidationError) as info:
        signing_key_create(name="k", algorithm="HS256", scopes=["offers:read", "customers:write"])
    assert "customers:write" in info.value.message_dict["scopes"][0]


def test_signing_key_admin__hs256_created__secret_shown_once_and_verifies(admin_client: Client) -> None:
    CustomerFactory(external_id="alice")
    response = admin_client.post(
        reverse("admin:access_customersigningkey_add"),
        {"name": "app backend", "algorithm": "HS256", "public_key": "", "audience": "", "scopes": ["offers:read"]},
        follow=True,
    )
    assert response.status_code == 200
    key = CustomerSigningKey.objects.get()
    shown = [str(m) for m in response.context["messages"]]
    assert any(key.secret in m and key.kid in m for m in shown), shown
    # The secret verifies a token; the admin never shows it again.
    token = jwt.encode(_claims("alice"), key.secret, algorithm="HS256", headers={"kid": key.kid})
    assert _client(token).get("/api/v1/customers/alice/referral-code").status_code == 200
    for url in (
        reverse("admin:access_customersigningkey_changelist"),
        reverse("admin:access_customersigningkey_change", args=[key.pk]),
    ):
        assert key.secret not in admin_client.get(url).content.decode()


def test_signing_key_admin__private_key_pasted__form_error_and_nothing_stored(
    admin_client: Client, rsa_private: Any
) -> None:
    private_pem = rsa_private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    response = admin_client.post(
        reverse("admin:access_customersigningkey_add"),
        {"name": "oops", "algorithm": "RS256", "public_key": private_pem, "audience": "", "scopes": ["offers:read"]},
    )
    assert response.status_code == 200
    assert "paste the PUBLIC key" in response.content.decode()
    assert not CustomerSigningKey.objects.exists()


def test_schema__customer_token_scheme__listed_on_the_four_client_operations_only(db: None) -> None:
    document = Client().get("/api/schema/", HTTP_ACCEPT="application/json").json()
    scheme = document["components"]["securitySchemes"]["CustomerToken"]
    assert (scheme["type"], scheme["scheme"], scheme["bearerFormat"]) == ("http", "bearer", "JWT")
    with_token = {
        f"{method.upper()} {path}"
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if any("CustomerToken" in requirement for requirement in operation.get("security", []))
    }
    assert with_token == {
        "GET /api/v1/customers/{external_id}/offers",
        "GET /api/v1/customers/{external_id}/assignments",
        "GET /api/v1/customers/{external_id}/referral-code",
        "POST /api/v1/exposures",
    }


def test_customer_token__over_rate__429_per_customer(
    rs256_key: CustomerSigningKey, rsa_private: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from access.throttling import ApiKeyRateThrottle

    monkeypatch.setattr(ApiKeyRateThrottle, "THROTTLE_RATES", {"api_key": "3/min"})
    CustomerFactory(external_id="alice")
    CustomerFactory(external_id="bob")

    def client_for(sub: str) -> APIClient:
        return _client(jwt.encode(_claims(sub), rsa_private, algorithm="RS256", headers={"kid": rs256_key.kid}))

    alice = client_for("alice")
    codes = [alice.get("/api/v1/customers/alice/referral-code").status_code for _ in range(4)]
    # A fresh token for the same customer shares the budget; another customer has their own.
    again = client_for("alice").get("/api/v1/customers/alice/referral-code")
    bob = client_for("bob").get("/api/v1/customers/bob/referral-code")

    assert codes == [200, 200, 200, 429]
    assert again.status_code == 429 and int(again["Retry-After"]) >= 1
    assert bob.status_code == 200


def test_create_signing_key_command__es256_public_key__kid_printed_and_token_accepted(
    ec_private: Any, tmp_path: Any
) -> None:
    import io

    from django.core.management import CommandError, call_command

    CustomerFactory(external_id="alice")
    (tmp_path / "public.pem").write_text(_pem(ec_private))
    (tmp_path / "private.pem").write_text(
        ec_private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode()
    )
    out = io.StringIO()
    call_command(
        "create_signing_key", "--name", "app", "--algorithm", "ES256", "--public-key-file", tmp_path / "public.pem",
        stdout=out,
    )  # fmt: skip
    kid = out.getvalue().strip().removeprefix("kid=")
    token = jwt.encode(_claims("alice"), ec_private, algorithm="ES256", headers={"kid": kid})
    assert _client(token).get("/api/v1/customers/alice/referral-code").status_code == 200
    with pytest.raises(CommandError, match="public_key: A private key"):
        call_command(
            "create_signing_key", "--name", "x", "--algorithm", "ES256", "--public-key-file", tmp_path / "private.pem"
        )

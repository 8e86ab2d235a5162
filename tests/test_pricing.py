"""Rate cards: validation (each bad key named), graduated tiers by hand, storage and versions."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from metering.cli import main
from metering.pricing import (
    InvalidRateCard,
    OrgTerms,
    Tier,
    card_for_period,
    load_rate_card,
    parse_rate_card,
    price_tiers,
    tier_charges,
)
from queries.ratecards import list_rate_cards
from tests.billing_helpers import engine_url

ROOT = Path(__file__).resolve().parent.parent
D = Decimal

LOOKUP = (Tier(D(10000), D("0.30")), Tier(D(50000), D("0.22")), Tier(None, D("0.15")))

GOOD = """
currency = "USD"
effective_from = "2026-01"

[meters.lookup.production]
tiers = [
  { up_to = 10000, unit_price = "0.30" },
  { up_to = 50000, unit_price = "0.22" },
  { unit_price = "0.15" },
]

[meters.lookup.sandbox]
tiers = [{ up_to = 500, unit_price = "0" }, { unit_price = "0.05" }]

[orgs.acme-insurance]
discount_percent = "10"
minimum_commit = "2500.00"
webhooks_billable = true
"""


def test_parse_domain_example():
    card = parse_rate_card(GOOD)
    assert card.currency == "USD" and card.effective_from == "2026-01"
    assert card.tiers("lookup", "production") == LOOKUP
    assert card.tiers("lookup", "sandbox") == (Tier(D(500), D(0)), Tier(None, D("0.05")))
    assert card.tiers("report_job", "production") is None
    assert ("report_job", "production") in card.unpriced_pairs()
    assert len(card.unpriced_pairs()) == 10
    assert card.terms("acme-insurance") == OrgTerms(D(10), D("2500.00"), True)
    assert card.terms("someone-else") == OrgTerms(D(0), D(0), False)


@pytest.mark.parametrize(
    ("quantity", "expected"),
    [
        (D(0), D(0)),                       # zero usage
        (D(1), D("0.30")),
        (D(10000), D("3000.00")),           # exactly at up_to: all in tier 1
        (D(10001), D("3000.22")),           # one past: one unit in tier 2
        (D(50000), D("11800.00")),          # 3000 + 40000 * 0.22
        (D(50001), D("11800.15")),          # one past the second boundary
        (D("0.5"), D("0.15")),              # fractional quantity
        (D("10000.5"), D("3000.11")),       # fractional across a boundary: 3000 + 0.5 * 0.22
        (D("0.000001"), D("0.0000003")),    # one micro-unit, exact
    ],
)
def test_graduated_tiers_by_hand(quantity, expected):
    assert price_tiers(quantity, LOOKUP) == expected


def test_tier_charges_explain_the_amount():
    charges = tier_charges(D(60000), LOOKUP)
    assert [(c.tier, c.start, c.up_to, c.quantity, c.unit_price, c.amount) for c in charges] == [
        (1, D(0), D(10000), D(10000), D("0.30"), D("3000.00")),
        (2, D(10000), D(50000), D(40000), D("0.22"), D("8800.00")),
        (3, D(50000), None, D(10000), D("0.15"), D("1500.00")),
    ]
    assert tier_charges(D(0), LOOKUP) == []
    assert tier_charges(D(10000), LOOKUP)[-1].tier == 1  # exactly at up_to stays in tier 1


def test_decimal_up_to_and_integer_prices_accepted():
    card = parse_rate_card(
        'currency = "EUR"\neffective_from = "2025-12"\n'
        '[meters.report_job.production]\ntiers = [{ up_to = "2.5", unit_price = 4 }, { unit_price = "1" }]\n'
    )
    assert card.tiers("report_job", "production") == (Tier(D("2.5"), D(4)), Tier(None, D(1)))
    assert price_tiers(D(3), card.tiers("report_job", "production")) == D("10.5")  # 2.5*4 + 0.5*1


BASE = 'currency = "USD"\neffective_from = "2026-01"\n'
T = "[meters.lookup.production]\n"


@pytest.mark.parametrize(
    ("text", "path"),
    [
        ('effective_from = "2026-01"\n', "currency"),
        ('currency = "usd"\neffective_from = "2026-01"\n', "currency"),
        ('currency = "USD"\neffective_from = "2026-13"\n', "effective_from"),
        ('currency = "USD"\neffective_from = "2026-1"\n', "effective_from"),
        ('currency = "USD"\n', "effective_from"),
        (BASE + "surprise = 1\n", "surprise"),
        (BASE + '[meters.lookups.production]\ntiers = [{ unit_price = "1" }]\n', "meters.lookups"),
        (BASE + '[meters.lookup.staging]\ntiers = [{ unit_price = "1" }]\n', "meters.lookup.staging"),
        (BASE + T + "tiers = []\n", "meters.lookup.production.tiers"),
        (BASE + T + 'price = "1"\n', "meters.lookup.production.price"),
        (BASE + T + 'tiers = [{ up_to = 10, unit_price = "1" }]\n',
         "meters.lookup.production.tiers[0].up_to"),                     # last tier not open
        (BASE + T + 'tiers = [{ unit_price = "1" }, { unit_price = "0.5" }]\n',
         "meters.lookup.production.tiers[0].up_to"),                     # closed tier without up_to
        (BASE + T + 'tiers = [{ up_to = 10, unit_price = "1" }, { up_to = 10, unit_price = "1" },'
                    ' { unit_price = "1" }]\n', "meters.lookup.production.tiers[1].up_to"),
        (BASE + T + 'tiers = [{ up_to = 10, unit_price = "1" }, { up_to = 5, unit_price = "1" },'
                    ' { unit_price = "1" }]\n', "meters.lookup.production.tiers[1].up_to"),
        (BASE + T + 'tiers = [{ up_to = 0, unit_price = "1" }, { unit_price = "1" }]\n',
         "meters.lookup.production.tiers[0].up_to"),
        (BASE + T + 'tiers = [{ up_to = 10, unit_price = "-0.01" }, { unit_price = "1" }]\n',
         "meters.lookup.production.tiers[0].unit_price"),
        (BASE + T + 'tiers = [{ up_to = 10, unit_price = 0.3 }, { unit_price = "1" }]\n',
         "meters.lookup.production.tiers[0].unit_price"),                # TOML float money
        (BASE + T + 'tiers = [{ up_to = 10, unit_price = "1" }, { unit_price = "abc" }]\n',
         "meters.lookup.production.tiers[1].unit_price"),
        (BASE + T + 'tiers = [{ up_to = 10, unit_price = "1" }, { unit_price = "1e3" }]\n',
         "meters.lookup.production.tiers[1].unit_price"),
        (BASE + T + 'tiers = [{ up_to = 10 }, { unit_price = "1" }]\n',
         "meters.lookup.production.tiers[0].unit_price"),
        (BASE + T + 'tiers = [{ up_to = 10, unit_price = "1", note = "x" }, { unit_price = "1" }]\n',
         "meters.lookup.production.tiers[0].note"),
        (BASE + T + 'tiers = [{ up_to = 10.5, unit_price = "1" }, { unit_price = "1" }]\n',
         "meters.lookup.production.tiers[0].up_to"),
        (BASE + '[orgs.acme-insurance]\ndiscount_percent = "101"\n', "orgs.acme-insurance.discount_percent"),
        (BASE + '[orgs.acme-insurance]\ndiscount_percent = "-1"\n', "orgs.acme-insurance.discount_percent"),
        (BASE + '[orgs.acme-insurance]\ndiscount_percent = 10.0\n', "orgs.acme-insurance.discount_percent"),
        (BASE + '[orgs.acme-insurance]\nminimum_commit = "-5"\n', "orgs.acme-insurance.minimum_commit"),
        (BASE + '[orgs.acme-insurance]\nminimum_commit = "10.001"\n', "orgs.acme-insurance.minimum_commit"),
        (BASE + '[orgs.acme-insurance]\nwebhooks_billable = "yes"\n',
         "orgs.acme-insurance.webhooks_billable"),
        (BASE + '[orgs.acme-insurance]\nseats = 3\n', "orgs.acme-insurance.seats"),
        (BASE + '[orgs.Acme_Insurance]\ndiscount_percent = "1"\n', "orgs.Acme_Insurance"),
    ],
)
def test_invalid_card_names_the_bad_key(text, path):
    with pytest.raises(InvalidRateCard) as info:
        parse_rate_card(text)
    assert info.value.path == path
    assert str(info.value).startswith(path + ":")


def test_not_toml_is_rejected():
    with pytest.raises(InvalidRateCard, match="not valid TOML"):
        parse_rate_card("currency = ")


def test_float_money_message_explains_why():
    with pytest.raises(InvalidRateCard, match="lost exactness"):
        parse_rate_card(BASE + T + 'tiers = [{ unit_price = 0.1 }]\n')


def test_default_card_prices_every_pair_and_demo_terms():
    card = parse_rate_card((ROOT / "pricing" / "default.toml").read_text())
    assert card.effective_from == "2025-01" and card.currency == "USD"
    assert card.unpriced_pairs() == []
    for (meter, env), tiers in card.meters.items():
        if env == "sandbox":
            assert tiers[0].unit_price == 0, f"{meter}/sandbox starts with a free allowance"
            prod = card.tiers(meter, "production")
            assert tiers[-1].unit_price < prod[0].unit_price, f"{meter}: sandbox is cheaper"
    assert card.terms("acme-insurance") == OrgTerms(D(10), D(0), True)
    assert card.terms("borealis-health") == OrgTerms(D(0), D("5000.00"), False)
    assert card.terms("cobalt-lending") == OrgTerms(D(5), D(0), False)
    assert card.terms("delta-payroll") == OrgTerms()


def _card(effective_from: str, price: str) -> str:
    return (f'currency = "USD"\neffective_from = "{effective_from}"\n'
            f'[meters.lookup.production]\ntiers = [{{ unit_price = "{price}" }}]\n')


def test_versions_by_effective_from(engine, tmp_path):
    assert card_for_period(engine, "2026-03") is None
    for name, eff, price in (("a", "2026-01", "1"), ("b", "2026-04", "2"), ("c", "2026-01", "3")):
        f = tmp_path / f"{name}.toml"
        f.write_text(_card(eff, price))
        load_rate_card(engine, f)
    assert card_for_period(engine, "2025-12") is None
    # two loads of 2026-01: the later load wins; 2026-04 replaces it from its own period on
    assert card_for_period(engine, "2026-01").tiers("lookup", "production")[0].unit_price == D(3)
    assert card_for_period(engine, "2026-03").tiers("lookup", "production")[0].unit_price == D(3)
    assert card_for_period(engine, "2026-04").tiers("lookup", "production")[0].unit_price == D(2)
    assert card_for_period(engine, "2027-01").tiers("lookup", "production")[0].unit_price == D(2)
    assert [c["effective_from"] for c in list_rate_cards(engine)] == ["2026-04", "2026-01", "2026-01"]


def test_cli_pricing_load(engine, tmp_path, capsys):
    url = engine_url(engine)
    bad = tmp_path / "bad.toml"
    bad.write_text(BASE + T + 'tiers = [{ up_to = 10, unit_price = "1" }, { up_to = 5, unit_price = "1" },'
                              ' { unit_price = "1" }]\n')
    assert main(["--database-url", url, "pricing", "load", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "meters.lookup.production.tiers[1].up_to" in err and "nothing stored" in err
    assert list_rate_cards(engine) == []
    assert main(["--database-url", url, "pricing", "load", str(tmp_path / "missing.toml")]) == 2
    assert list_rate_cards(engine) == []

    assert main(["--database-url", url, "pricing", "load", str(ROOT / "pricing" / "default.toml")]) == 0
    out = capsys.readouterr().out
    assert "2025-01" in out and "12 priced" in out
    card = card_for_period(engine, "2026-03")
    assert card is not None and card.terms("borealis-health").minimum_commit == D("5000.00")

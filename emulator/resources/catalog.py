"""Products and Prices (docs.stripe.com/api/products, docs.stripe.com/api/prices)."""

from __future__ import annotations

from emulator.errors import invalid
from emulator.store import Obj, Store, _bool, _int


class CatalogMixin(Store):
    def create_product(self, p: Obj) -> Obj:
        if "name" not in p:
            raise invalid("Missing required param: name.", param="name", code="parameter_missing")
        fields = {
            "name": p["name"],
            "active": _bool(p.get("active", True)),
            "metadata": p.get("metadata") or {},
            "description": p.get("description"),
        }
        if p.get("id"):
            if p["id"] in self.objects:
                raise invalid("Product already exists.", param="id", code="resource_already_exists")
            product = self._create("product", fields)
            del self.objects[product["id"]], self.by_kind["product"][product["id"]]
            product["id"] = p["id"]
            self._add(product)
            return product
        return self._create("product", fields)

    def create_price(self, p: Obj) -> Obj:
        if "currency" not in p:
            raise invalid(
                "Missing required param: currency.", param="currency", code="parameter_missing"
            )
        if "product" in p:
            product = self.get("product", p["product"], "product")
        elif "product_data" in p:
            product = self.create_product(p["product_data"])
        else:
            raise invalid(
                "Missing required param: product.", param="product", code="parameter_missing"
            )
        if lookup := p.get("lookup_key"):
            for other in self.all("price"):
                if other.get("lookup_key") == lookup:
                    if not _bool(p.get("transfer_lookup_key")):
                        raise invalid(
                            f"A price (`{other['id']}`) already uses that lookup key.",
                            param="lookup_key",
                        )
                    other["lookup_key"] = None
        recurring = p.get("recurring")
        if recurring:
            recurring = {
                "interval": recurring["interval"],
                "interval_count": _int(
                    recurring.get("interval_count", 1), "recurring[interval_count]"
                ),
                "usage_type": recurring.get("usage_type", "licensed"),
                "meter": recurring.get("meter"),
            }
        return self._create(
            "price",
            {
                "active": True,
                "currency": p["currency"].lower(),
                "product": product["id"],
                "unit_amount": _int(p.get("unit_amount", 0), "unit_amount"),
                "recurring": recurring,
                "type": "recurring" if recurring else "one_time",
                "lookup_key": p.get("lookup_key"),
                "nickname": p.get("nickname"),
                "metadata": p.get("metadata") or {},
                "billing_scheme": "per_unit",
            },
        )

    def list_prices(self, p: Obj) -> Obj:
        keys = p.get("lookup_keys")
        return self.paginate(
            "price",
            p,
            lambda o: (
                (not keys or o.get("lookup_key") in keys)
                and (p.get("product") in (None, o["product"]))
                and ("active" not in p or o["active"] == _bool(p["active"]))
            ),
        )

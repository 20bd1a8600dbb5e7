"""A purchase flow through a Partner Center client pcsaga did not write.

Drives `partnercenterservices` (an AutoRest-generated Python SDK on msrest, from PyPI) against
the simulator: the customer, its subscriptions, a subscription registration and its status, a
checkout, the order and the order list, and the subscription the purchase created. The client
has no cart creation, so the cart is created with a plain HTTP request, as its users do.

Prints one JSON object: what each method returned, as the client deserialized it.
Arguments: base URL, token URL, client id, client secret, resource, customer, subscription.
"""

import json
import sys
import uuid

import requests
from msrest.authentication import BasicTokenAuthentication
from microsoft.store.partnercenterservices import MicrosoftPartnerStoreApis

base, token_url, client_id, secret, resource, customer, azure_subscription = sys.argv[1:8]

token = requests.post(
    token_url,
    data={
        "grant_type": "client_credentials",
        "client_id": client_id,
        "client_secret": secret,
        "resource": resource,
    },
    timeout=30,
).json()
client = MicrosoftPartnerStoreApis(BasicTokenAuthentication(token), base_url=base)
get = client.getvversioncustomerscustomer
post = client.postvversioncustomerscustomer
correlation = str(uuid.uuid4())
out = {}

c = get.id(customer, "1", ms_correlation_id=correlation)
out["customer"] = {
    "id": c.id,
    "tenantId": c.company_profile.tenant_id,
    "companyName": c.company_profile.company_name,
    "country": c.billing_profile.default_address.country,
    "relationship": str(c.relationship_to_partner),
}

s = get.id6(customer, azure_subscription, "1", ms_correlation_id=correlation)
out["azureSubscription"] = {"id": s.id, "status": str(s.status), "offerName": s.offer_name}

registration = post.idregistrations(
    customer, azure_subscription, "1", ms_correlation_id=correlation,
    ms_request_id=str(uuid.uuid4()), raw=True,
)
out["registration"] = {
    "status": registration.response.status_code,
    "location": registration.response.headers.get("Location"),
}
status = get.idregistrationstatus(customer, azure_subscription, "1", ms_correlation_id=correlation)
out["registrationStatus"] = str(status.status)

# No cart creation in this client: a plain request, with the same token.
headers = {
    "Authorization": f"Bearer {token['access_token']}",
    "MS-CorrelationId": correlation,
    "MS-RequestId": str(uuid.uuid4()),
}
availabilities = requests.get(
    f"{base}/v1/customers/{customer}/products/DG7GMGF0FKZV/skus/0003/availabilities",
    headers=headers, timeout=30,
).json()
catalog_item = availabilities["items"][0]["catalogItemId"]
cart = requests.post(
    f"{base}/v1/customers/{customer}/carts",
    headers=headers, timeout=30,
    json={"lineItems": [{"id": 0, "catalogItemId": catalog_item, "quantity": 3,
                         "billingCycle": "one_time", "termDuration": "P1Y",
                         "friendlyName": "third-party client"}]},
).json()

raw = post.idcheckout(
    customer, cart["id"], "1", ms_correlation_id=correlation, ms_request_id=str(uuid.uuid4()),
    raw=True,
)
result = raw.output
order = result.orders[0]
out["checkout"] = {
    "orders": len(result.orders),
    "orderId": order.id,
    "currencyCode": order.currency_code,
    # Not in this client's (2019) Order model: read from the reply it received.
    "currencySymbol": raw.response.json()["orders"][0].get("currencySymbol"),
    "creationDate": order.creation_date.isoformat() if order.creation_date else None,
    "lines": [
        {"offerId": line.offer_id, "quantity": line.quantity, "subscriptionId": line.subscription_id}
        for line in order.line_items
    ],
}

again = get.id5(customer, order.id, "1", ms_correlation_id=correlation)
out["order"] = {"id": again.id, "status": str(again.status)}
listed = get.value7(customer, "1", ms_correlation_id=correlation)
out["orders"] = {"totalCount": listed.total_count, "ids": [o.id for o in listed.items]}

bought = order.line_items[0].subscription_id
sub = get.id6(customer, bought, "1", ms_correlation_id=correlation)
out["boughtSubscription"] = {
    "id": sub.id, "offerId": sub.offer_id, "quantity": sub.quantity,
    "status": str(sub.status), "orderId": sub.order_id,
}
subs = get.value9(customer, "1", ms_correlation_id=correlation)
out["subscriptions"] = sorted(x.id for x in subs.items)

print(json.dumps(out))

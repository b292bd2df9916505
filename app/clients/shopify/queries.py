"""Every GraphQL document the Shopify client can send, for Admin API 2026-07 and 2026-10.

Each document holds exactly one operation named like its key in `ALL_OPERATIONS`, so the
operation name doubles as the key for learned query costs and for log lines.
`tests/clients/test_shopify_schema.py` validates all of them, and the variables the client
really sends, against both versions' introspection, and refuses any deprecated field, argument,
input field or enum value (UPSTREAMS.md, "2026-07 deprecations that touch us").
"""

from __future__ import annotations

# Shared selection of a card; `models.parse_gift_card` reads exactly these fields.
_GIFT_CARD_SELECTION = """
  id
  lastCharacters
  balance { amount currencyCode }
  initialValue { amount currencyCode }
  enabled
  expiresOn
  deactivatedAt
  createdAt
  updatedAt
  note
  customer { id }
  order { id }
"""
GIFT_CARD_FIELDS = f"""
fragment GiftCardFields on GiftCard {{{_GIFT_CARD_SELECTION}}}
"""

GIFT_CARD_CREATE = (
    """
mutation GiftCardCreate($input: GiftCardCreateInput!) {
  giftCardCreate(input: $input) {
    giftCard { ...GiftCardFields }
    giftCardCode
    userErrors { field message code }
  }
}
"""
    + GIFT_CARD_FIELDS
)

GIFT_CARD_CREDIT = """
mutation GiftCardCredit($id: ID!, $creditInput: GiftCardCreditInput!) {
  giftCardCredit(id: $id, creditInput: $creditInput) {
    giftCardCreditTransaction {
      id
      note
      amount { amount currencyCode }
      giftCard { id balance { amount currencyCode } }
    }
    userErrors { field message code }
  }
}
"""

GIFT_CARD_DEBIT = """
mutation GiftCardDebit($id: ID!, $debitInput: GiftCardDebitInput!) {
  giftCardDebit(id: $id, debitInput: $debitInput) {
    giftCardDebitTransaction {
      id
      note
      amount { amount currencyCode }
      giftCard { id balance { amount currencyCode } }
    }
    userErrors { field message code }
  }
}
"""

GIFT_CARD_DEACTIVATE = (
    """
mutation GiftCardDeactivate($id: ID!) {
  giftCardDeactivate(id: $id) {
    giftCard { ...GiftCardFields }
    userErrors { field message code }
  }
}
"""
    + GIFT_CARD_FIELDS
)

GIFT_CARD_UPDATE = (
    """
mutation GiftCardUpdate($id: ID!, $input: GiftCardUpdateInput!) {
  giftCardUpdate(id: $id, input: $input) {
    giftCard { ...GiftCardFields }
    userErrors { field message }
  }
}
"""
    + GIFT_CARD_FIELDS
)

GIFT_CARD_SEND_NOTIFICATION = """
mutation GiftCardSendNotification($id: ID!) {
  giftCardSendNotificationToCustomer(id: $id) {
    giftCard { id }
    userErrors { field message code }
  }
}
"""

GIFT_CARD_GET = (
    """
query GiftCardGet($id: ID!) {
  giftCard(id: $id) { ...GiftCardFields }
}
"""
    + GIFT_CARD_FIELDS
)

GIFT_CARD_TRANSACTIONS = """
query GiftCardTransactions($id: ID!, $first: Int!, $after: String) {
  giftCard(id: $id) {
    id
    balance { amount currencyCode }
    transactions(first: $first, after: $after, reverse: true) {
      nodes {
        __typename
        id
        note
        processedAt
        amount { amount currencyCode }
      }
      pageInfo { hasNextPage endCursor }
    }
  }
}
"""

GIFT_CARDS_SEARCH = (
    """
query GiftCardsSearch(
  $first: Int!
  $after: String
  $query: String
  $sortKey: GiftCardSortKeys
  $reverse: Boolean
) {
  giftCards(first: $first, after: $after, query: $query, sortKey: $sortKey, reverse: $reverse) {
    nodes { ...GiftCardFields }
    pageInfo { hasNextPage endCursor }
  }
}
"""
    + GIFT_CARD_FIELDS
)

# `Customer.email` is deprecated since 2026-01 for `defaultEmailAddress.emailAddress`.
CUSTOMERS_BY_EMAIL = """
query CustomersByEmail($first: Int!, $query: String!) {
  customers(first: $first, query: $query) {
    nodes { id defaultEmailAddress { emailAddress } }
  }
}
"""

CUSTOMER_CREATE = """
mutation CustomerCreate($input: CustomerInput!) {
  customerCreate(input: $input) {
    customer { id }
    userErrors { field message }
  }
}
"""

ORDER_GET = """
query OrderGet($id: ID!, $transactionsFirst: Int!, $lineItemsFirst: Int!) {
  order(id: $id) {
    id
    name
    email
    customer { defaultEmailAddress { emailAddress } }
    shippingAddress { name }
    transactions(first: $transactionsFirst) {
      id
      kind
      status
      gateway
      receiptJson
      amountSet { shopMoney { amount currencyCode } }
      parentTransaction { id }
    }
    lineItems(first: $lineItemsFirst) {
      nodes {
        id
        title
        quantity
        isGiftCard
        originalUnitPriceSet { shopMoney { amount currencyCode } }
      }
    }
  }
}
"""

# The query Shopify runs in the background for a bulk export; sent as a string variable.
BULK_GIFT_CARDS_QUERY = f"""
query BulkGiftCards {{
  giftCards {{
    edges {{
      node {{{_GIFT_CARD_SELECTION}}}
    }}
  }}
}}
"""

# `groupObjects: false` keeps the flat JSONL (children as rows with `__parentId`) `bulk` reads.
BULK_OPERATION_RUN_QUERY = """
mutation BulkOperationRunQuery($query: String!) {
  bulkOperationRunQuery(query: $query, groupObjects: false) {
    bulkOperation { id status }
    userErrors { field message code }
  }
}
"""

# Since 2026-01 up to five bulk queries run at once per shop (`currentBulkOperation` is
# deprecated): ours is followed by its id, and found among the live ones by its query text.
BULK_OPERATION_GET = """
query BulkOperationGet($id: ID!) {
  bulkOperation(id: $id) {
    id
    status
    errorCode
    objectCount
    url
    partialDataUrl
  }
}
"""

BULK_OPERATIONS_LIVE = """
query BulkOperationsLive($first: Int!, $query: String!) {
  bulkOperations(first: $first, query: $query) {
    nodes { id status query createdAt }
  }
}
"""

# `callbackUrl` (argument, input and field) is deprecated for `uri`.
WEBHOOK_SUBSCRIPTIONS = """
query WebhookSubscriptions($first: Int!, $after: String) {
  webhookSubscriptions(first: $first, after: $after) {
    nodes { id topic uri format }
    pageInfo { hasNextPage endCursor }
  }
}
"""

WEBHOOK_SUBSCRIPTION_CREATE = """
mutation WebhookSubscriptionCreate(
  $topic: WebhookSubscriptionTopic!
  $webhookSubscription: WebhookSubscriptionInput!
) {
  webhookSubscriptionCreate(topic: $topic, webhookSubscription: $webhookSubscription) {
    webhookSubscription { id topic uri format }
    userErrors { field message }
  }
}
"""

WEBHOOK_SUBSCRIPTION_DELETE = """
mutation WebhookSubscriptionDelete($id: ID!) {
  webhookSubscriptionDelete(id: $id) {
    deletedWebhookSubscriptionId
    userErrors { field message }
  }
}
"""

# The cheapest authenticated read: proves the token works and which version answers.
SHOP_CHECK = """
query ShopCheck {
  shop { id }
}
"""

ALL_OPERATIONS: dict[str, str] = {
    "GiftCardCreate": GIFT_CARD_CREATE,
    "GiftCardCredit": GIFT_CARD_CREDIT,
    "GiftCardDebit": GIFT_CARD_DEBIT,
    "GiftCardDeactivate": GIFT_CARD_DEACTIVATE,
    "GiftCardUpdate": GIFT_CARD_UPDATE,
    "GiftCardSendNotification": GIFT_CARD_SEND_NOTIFICATION,
    "GiftCardGet": GIFT_CARD_GET,
    "GiftCardTransactions": GIFT_CARD_TRANSACTIONS,
    "GiftCardsSearch": GIFT_CARDS_SEARCH,
    "CustomersByEmail": CUSTOMERS_BY_EMAIL,
    "CustomerCreate": CUSTOMER_CREATE,
    "OrderGet": ORDER_GET,
    "BulkGiftCards": BULK_GIFT_CARDS_QUERY,
    "BulkOperationRunQuery": BULK_OPERATION_RUN_QUERY,
    "BulkOperationGet": BULK_OPERATION_GET,
    "BulkOperationsLive": BULK_OPERATIONS_LIVE,
    "WebhookSubscriptions": WEBHOOK_SUBSCRIPTIONS,
    "WebhookSubscriptionCreate": WEBHOOK_SUBSCRIPTION_CREATE,
    "WebhookSubscriptionDelete": WEBHOOK_SUBSCRIPTION_DELETE,
    "ShopCheck": SHOP_CHECK,
}
"""Operation name -> document. The client sends nothing else (the schema test checks both)."""

MUTATIONS: frozenset[str] = frozenset(
    name for name, document in ALL_OPERATIONS.items() if document.lstrip().startswith("mutation")
)

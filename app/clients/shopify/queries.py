"""Every GraphQL document the Shopify client can send, checked against the 2025-01 Admin schema.

Each document holds exactly one operation named like its key in `ALL_OPERATIONS`, so the
operation name doubles as the key for learned query costs and for log lines.
`tests/clients/test_shopify_schema.py` validates all of them against Shopify's introspection.
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

CUSTOMERS_BY_EMAIL = """
query CustomersByEmail($first: Int!, $query: String!) {
  customers(first: $first, query: $query) {
    nodes { id email }
  }
}
"""

CUSTOMER_CREATE = """
mutation CustomerCreate($input: CustomerInput!) {
  customerCreate(input: $input) {
    customer { id email }
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
    customer { email }
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

BULK_OPERATION_RUN_QUERY = """
mutation BulkOperationRunQuery($query: String!) {
  bulkOperationRunQuery(query: $query) {
    bulkOperation { id status }
    userErrors { field message code }
  }
}
"""

CURRENT_BULK_OPERATION = """
query CurrentBulkOperation {
  currentBulkOperation(type: QUERY) {
    id
    status
    errorCode
    query
    objectCount
    url
    partialDataUrl
  }
}
"""

WEBHOOK_SUBSCRIPTION_CREATE = """
mutation WebhookSubscriptionCreate(
  $topic: WebhookSubscriptionTopic!
  $webhookSubscription: WebhookSubscriptionInput!
) {
  webhookSubscriptionCreate(topic: $topic, webhookSubscription: $webhookSubscription) {
    webhookSubscription { id }
    userErrors { field message }
  }
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
    "CurrentBulkOperation": CURRENT_BULK_OPERATION,
    "WebhookSubscriptionCreate": WEBHOOK_SUBSCRIPTION_CREATE,
}
"""Operation name -> document. The client sends nothing else (the schema test checks both)."""

MUTATIONS: frozenset[str] = frozenset(
    name for name, document in ALL_OPERATIONS.items() if document.lstrip().startswith("mutation")
)

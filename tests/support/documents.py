"""Resources as the API shows them, for tests that record events directly (the contract check
holds an event's content to its resources' schemas, so made-up content must be complete)."""

from __future__ import annotations

CUSTOMER = {"id": "cust_1", "first_name": "Ada", "last_name": "Lovelace", "email": "ada@example.com",
            "auto_collection": "on", "allow_direct_debit": False, "created_at": 1700000000, "taxability": "taxable",
            "account_credits": 0, "refundable_credits": 0, "excess_payments": 0, "object": "customer"}

INVOICE = {"id": "inv_1", "customer_id": "cust_1", "recurring": False, "status": "payment_due",
           "price_type": "tax_exclusive", "start_date": 1700000000, "end_date": 1700000000, "amount": 1250,
           "amount_paid": 0, "amount_adjusted": 0, "credits_applied": 0, "amount_due": 1250, "first_invoice": True,
           "currency_code": "USD", "tax": 0, "sub_total": 1250,
           "line_items": [{"date_from": 1700000000, "date_to": 1700000000, "unit_amount": 1250, "quantity": 1,
                           "amount": 1250, "is_taxed": False, "tax": 0, "description": "Setup",
                           "type": "charge", "entity_type": "adhoc", "object": "line_item"}],
           "discounts": [], "taxes": [], "linked_transactions": [], "linked_orders": [], "notes": [],
           "object": "invoice"}

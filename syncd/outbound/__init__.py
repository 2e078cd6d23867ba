"""Outbound webhooks (issue 14): the change log POSTed in batches to configured HTTP endpoints,
signed per the Standard Webhooks spec (docs/changelog.md, "Outbound webhooks")."""

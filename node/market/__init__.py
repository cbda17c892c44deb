"""Market: pricing, contracts, ledger, audits and reputation (no networking)."""

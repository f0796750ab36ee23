"""Authorization of money-moving requests: producer signatures, the sealed producer list and
policy, the limits ledger and the audit trail. Evaluated only in the key-holding worker."""

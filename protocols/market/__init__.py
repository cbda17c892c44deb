"""/zhtp/market/1.0.0: storage deals (quotes, contract deploy, query, execute, audits).

``messages`` converts the wire protobuf to typed values and signs quotes,
``handlers`` defines the ``MarketBackend`` interface the node implements and
dispatches a request to it, ``session`` serves one stream, ``client`` is the
other end. Pricing, the contract state machine and proof-of-storage
verification live in ``node/market``.
"""

"""gRPC front end: the xret.v1.Retrieval servicer over the shared engine, plus health and reflection."""

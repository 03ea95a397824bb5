"""clawgate's command line (`clawgate up`, `clawgate agent`, ...) with the supervisor that runs
edge and workers, and the generated gRPC stubs of the public contract (`clawgate.agent.v1`)."""

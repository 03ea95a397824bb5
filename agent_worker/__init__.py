"""The clawgate agent worker: a grpc.aio server that runs agent turns and keeps transcripts."""

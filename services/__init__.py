"""What the clawgate edge and agent workers share: config, logging, the CLI, gRPC stubs."""

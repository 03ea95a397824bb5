"""What the clawgate edge and agent workers share: the config and its sections, logging,
tracing, metrics, ids, networking and the turn events both sides speak."""

"""Model providers: each turns a prompt into a stream of text deltas and one completion."""

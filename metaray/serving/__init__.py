"""Ray Serve: few-shot tasks adapted online from the meta-learned prompt, over HTTP."""

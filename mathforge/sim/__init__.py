"""Simulated servers for rehearsals and tests: OpenAI-compatible teachers that read our prompts
(`teachersim`: the generic world; `miniteacher`: the miniature world), their batch API
(`batchapi`), yield-changing reply profiles (`simprofiles`) and a scripted fault-injection server
(`mockserver`). They depend on synthesis's formats; the engine never depends on them."""

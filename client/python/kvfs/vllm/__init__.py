"""kvfs for vLLM.

- `kvfs.vllm.tier.KvfsTier`: a secondary tier for vLLM's TieringOffloadingSpec
  (`{"type": "KvfsTier", "module_path": "kvfs.vllm.tier", "root_dir": ...}`).
- `kvfs.vllm.namespace`: the guard that pins a namespace to what its blocks
  were written with.

Importing the submodules needs vLLM; this package itself does not."""

# Runs on the device machine (python3 with torch + transformers). Writes into $OUT:
#  hf/            a tiny random GPT2LMHeadModel saved by transformers (config.json + model.safetensors)
#  hf_expected.json   its logits for fixed ids (every position) and 12 greedy tokens after a 6-token prompt
#  ours_by_hf.json    transformers' logits for the checkpoint our code saved (.device/ours)
import json, os, sys, torch, transformers
from transformers import GPT2Config, GPT2LMHeadModel
out = os.environ["OUT"]
print("transformers", transformers.__version__, "torch", torch.__version__)
torch.manual_seed(0)
cfg = GPT2Config(vocab_size=512, n_positions=64, n_embd=64, n_layer=2, n_head=4,
                 resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=None, eos_token_id=None)
model = GPT2LMHeadModel(cfg).eval()
with torch.no_grad():
    g = torch.Generator().manual_seed(1)
    for name, p in model.named_parameters():
        p.add_(torch.randn(p.shape, generator=g) * 0.05)  # biases and LayerNorms too, so misplaced tensors show
model.save_pretrained(os.path.join(out, "hf"), safe_serialization=True)
ids = [5, 17, 300, 42, 511, 0, 7, 7, 128, 64, 3, 250, 499, 11, 2, 90]
x = torch.tensor([ids])
with torch.no_grad():
    logits = model(x).logits[0].float()
    seq = ids[:6]
    for _ in range(12):
        nxt = int(model(torch.tensor([seq])).logits[0, -1].argmax())
        seq.append(nxt)
json.dump({"transformers": transformers.__version__, "input_ids": ids, "logits": logits.tolist(),
           "greedy_prompt": ids[:6], "greedy_tokens": seq[6:]}, open(os.path.join(out, "hf_expected.json"), "w"))
from safetensors import safe_open
with safe_open(os.path.join(out, "hf", "model.safetensors"), "pt") as f:
    print("hf keys:", sorted(f.keys())[:5], "...", len(list(f.keys())), "metadata", f.metadata())
# The other direction: load what our code saved.
ours = GPT2LMHeadModel.from_pretrained(".device/ours").eval()
exp = json.load(open(".device/ours/our_logits.json"))
with torch.no_grad():
    hf_logits = ours(torch.tensor([exp["input_ids"]])).logits[0].float()
diff = (hf_logits - torch.tensor(exp["logits"])).abs().max().item()
print("ours loaded by transformers: max |diff| vs our logits =", diff)
json.dump({"input_ids": exp["input_ids"], "logits": hf_logits.tolist(), "max_abs_diff_vs_ours": diff},
          open(os.path.join(out, "ours_by_hf.json"), "w"))

"""Where a GPU training step of the teacher spends its time (MODEL_CARD.md, stage 3): crops, kernels, the
device-side degradation, the JPEG alone, and one bf16 teacher step, for 256 crops of 128 px. Needs CUDA and
the packed data in .carry/train (configs/default/pack_data.py); run from the repository root.
"""
import time, torch
from instantsr.data import HRCropDataset, degrade_collate, degrade_pairs
from instantsr.methods.resshift import ResShiftConfig, ResShiftRecipe
dev = torch.device("cuda")
ds = HRCropDataset(".carry/train", crop=128, cache=True)
def tm(f, n=5):
    f(); torch.cuda.synchronize(); t = time.time()
    for _ in range(n): out = f()
    torch.cuda.synchronize(); return (time.time() - t) / n * 1000, out
ms, items = tm(lambda: [ds[(i % len(ds), i)] for i in range(256)], 2); print(f"getitem x256 {ms:.0f} ms")
ms, batch = tm(lambda: degrade_collate(items), 2); print(f"collate (kernels) {ms:.0f} ms")
ms, (hr, lr) = tm(lambda: degrade_pairs(batch, dev)); print(f"degrade on GPU {ms:.0f} ms")
from instantsr.jpeg import jpeg
ms, _ = tm(lambda: jpeg(hr, 50)); print(f"jpeg 256x128^2 {ms:.1f} ms")
r = ResShiftRecipe(ResShiftConfig(unet="small", sigma_data=0.2)); net = r.backbone.to(dev)
opt = torch.optim.AdamW(net.parameters(), 1e-4)
class Ctx:
    generator = torch.Generator(dev).manual_seed(0)
    def update(self, name, loss): opt.zero_grad(); loss.backward(); opt.step()
def step():
    with torch.autocast("cuda", torch.bfloat16): return r.training_step(hr, lr, Ctx())
ms, _ = tm(step); print(f"teacher train step (b256, bf16) {ms:.0f} ms")

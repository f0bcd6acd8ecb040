# gcm-lasagne: Theano 1.0.5 + Lasagne 0.1 with Theano's CUDA back-end
# (libgpuarray/pygpu 0.7.6). Three variants of one image, chosen with VARIANT:
#
#   docker build -t gcm-lasagne .                                   # cuda11 (default)
#   docker build --build-arg VARIANT=cuda10 -t gcm-lasagne:cuda10 .  # CUDA 10.2 + cuDNN 7
#   docker build --build-arg VARIANT=cpu -t gcm-lasagne:cpu .        # no CUDA at all
#
#   docker run --gpus all -v "$PWD/data:/app/data" -v "$PWD/runs:/app/runs" \
#       -v "$PWD/results:/app/results" gcm-lasagne
#
# Without access to an image registry (no `docker pull debian:bookworm-slim`),
# docker/build-local.sh makes the base image locally and builds cpu and cuda11.
#
# docs/gpu.md has the whole story, including what was and was not verified:
# the cpu and cuda11 variants build and pass their self-checks (CI builds
# them with docker/build-local.sh and runs the project in the cpu image);
# cuda10 has never been built here, and no variant has run on a GPU.
#
# Needs BuildKit (Docker's default builder since Engine 23.0; DOCKER_BUILDKIT=1
# on older engines): it builds only the stages the chosen VARIANT uses. The
# legacy builder would build them all, cuda10's ubuntu:18.04 stage included.
# No `# syntax=` line: it would make BuildKit fetch its Dockerfile frontend
# from Docker Hub, and so fail offline; the built-in frontend reads this file.
#
# Design: Theano 1.0.5 needs Python <= 3.11 (it imports numpy.distutils) and
# numpy 1.23.5, and its GPU back-end needs pygpu 0.7.x, which is not on PyPI.
# Debian bookworm has all three pieces: Python 3.11 as its system Python and
# python3-pygpu/libgpuarray3 0.7.6 built with CUDA support for that Python.
# NVIDIA's CUDA base images are Ubuntu (no Python 3.11 + pygpu 0.7 there),
# so the base is Debian and the CUDA user-space libraries come from elsewhere:
# libgpuarray needs no CUDA at build or link time; it dlopen()s the
# unversioned libcuda.so (driver, injected by the NVIDIA container toolkit at
# `docker run --gpus`), libnvrtc.so (compiles its kernels) and libcublas.so
# (GEMM, and so Theano's GpuCorrMM convolutions) when the GPU is first used.

# cuda11 (default) | cuda10 | cpu. See the variant stages below.
ARG VARIANT=cuda11

############################################################################
# base: Debian's Python 3.11, a C++ compiler and BLAS for Theano, and the
# project's pinned Python packages from requirements.txt.
FROM debian:bookworm-slim AS base
SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# Versions are bookworm's own (main, not updates): they stay installable for
# the life of the release.
# - g++ 12: Theano compiles every op it uses to C++ at run time (gcc 12.2 is
#   the compiler the project's CPU measurements used).
# - libopenblas-dev: gcm_lasagne/compat.py links Theano's CPU ops against
#   the system OpenBLAS when /usr/lib/x86_64-linux-gnu/libopenblas.so exists.
# - python3-dev: Python.h for those compiles; python3-venv: the venv below.
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
        g++=4:12.2.0-3 \
        libopenblas-dev=0.3.21+ds-4 \
        python3-dev=3.11.2-1+b1 \
        python3-venv=3.11.2-1+b1 \
 && rm -rf /var/lib/apt/lists/*

# A venv over Debian's Python that can also see Debian's packages
# (--system-site-packages): the GPU variants get pygpu from apt. Packages
# pip installs into the venv come first on sys.path, so requirements.txt's
# numpy 1.23.5 shadows the numpy 1.24 that python3-pygpu pulls in (Theano
# 1.0.5 fails to import with numpy >= 1.24); docker/check_image.py asserts
# this at build time.
RUN python3 -m venv --system-site-packages /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1 \
    PYTHONPATH=/app

# The one source of truth for Python package versions (environment.yml
# installs the same file).
COPY requirements.txt /tmp/requirements.txt
RUN pip install --no-cache-dir -r /tmp/requirements.txt

############################################################################
# gpu: Theano's CUDA back-end from Debian bookworm (0.7.6 is the last
# libgpuarray release; Theano 1.0.5 accepts pygpu 0.7.x with the C API
# version 2 that 0.7.6 reports). libgpuarray-dev has the headers Theano's
# GPU ops compile against. None of them links to CUDA.
FROM base AS gpu
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
        libgpuarray-dev=0.7.6-13+b1 \
        libgpuarray3=0.7.6-13+b1 \
        python3-pygpu=0.7.6-13+b1 \
 && rm -rf /var/lib/apt/lists/*

# libgpuarray opens "libcuda.so" (no version). The NVIDIA container toolkit
# mounts the host driver's libcuda.so.1 into /usr/lib/x86_64-linux-gnu and
# current toolkits also add a libcuda.so link; this link, searched first
# through LD_LIBRARY_PATH, covers toolkits that do not. Without a GPU it
# dangles, dlopen() fails and gcm_lasagne.device reports it.
RUN mkdir -p /opt/cuda-links \
 && ln -s /usr/lib/x86_64-linux-gnu/libcuda.so.1 /opt/cuda-links/libcuda.so
# --gpus all needs no more; these let a host whose default runtime is nvidia
# inject the GPUs too, as NVIDIA's own CUDA images do.
ENV NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility

############################################################################
# cuda11 (default): CUDA 11.8 NVRTC and cuBLAS from NVIDIA's PyPI wheels.
# Runs on current GPUs up to Hopper (compute capability 9.0; NVRTC 11.8
# knows compute_90). Not Blackwell (10.x): libgpuarray 0.7.6 truncates
# two-digit major architecture numbers. No cuDNN: Theano 1.0.5 does not
# build against cuDNN >= 8 (the only cuDNN for CUDA 11), so dnn.enabled=False
# and convolutions run as cuBLAS GEMMs (GpuCorrMM).
# Why 11.8 rather than 12.x: libgpuarray hands the driver PTX to JIT, and a
# driver only JITs PTX from an NVRTC no newer than itself, so the newest
# NVRTC raises the driver floor for no gain here; 11.8 needs driver >= 520
# and already covers Ada and Hopper. CUDA 11.7 is the newest CUDA with a
# public report of Theano 1.0.5 starting its GPU back-end (Theano #6791).
FROM gpu AS variant-cuda11
ARG NV=/opt/venv/lib/python3.11/site-packages/nvidia
# The wheels ship only versioned names (libnvrtc.so.11.2, libcublas.so.11):
# add the unversioned names libgpuarray asks for, next to the real files so
# that their $ORIGIN run paths (libcublasLt, libnvrtc-builtins) still work.
RUN pip install --no-cache-dir \
        nvidia-cuda-nvrtc-cu11==11.8.89 \
        nvidia-cublas-cu11==11.11.3.6 \
 && ln -s libnvrtc.so.11.2 "$NV/cuda_nvrtc/lib/libnvrtc.so" \
 && ln -s libcublas.so.11 "$NV/cublas/lib/libcublas.so"
ENV LD_LIBRARY_PATH=/opt/cuda-links:$NV/cuda_nvrtc/lib:$NV/cublas/lib \
    NVIDIA_REQUIRE_CUDA=cuda>=11.8 \
    GCM_IMAGE_VARIANT=cuda11 \
    THEANO_FLAGS=device=cuda,floatX=float32,dnn.enabled=False,base_compiledir=/app/cache/theano

############################################################################
# cuda10: CUDA 10.2 + cuDNN 7.6.5, the newest cuDNN Theano 1.0.5 supports
# (closest to the paper's CUDA 8.0 + cuDNN 5.1). For GPUs up to Turing
# (compute capability <= 7.5: NVRTC 10.2 knows no newer architecture), e.g.
# the paper's TITAN X; driver >= 440.33. NVIDIA deleted its CUDA 10 images
# from Docker Hub in 2023 and PyPI has no CUDA 10 wheels, so the libraries
# come from NVIDIA's Ubuntu 18.04 apt repositories in a throw-away stage
# and only the files Theano uses are copied over.
FROM ubuntu:18.04 AS cuda10-libs
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ARG CUDA_REPO=https://developer.download.nvidia.com/compute/cuda/repos/ubuntu1804/x86_64
ARG ML_REPO=https://developer.download.nvidia.com/compute/machine-learning/repos/ubuntu1804/x86_64
# Tools of a throw-away stage; nothing of them reaches the image.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl gnupg \
 && rm -rf /var/lib/apt/lists/*
# cuda-keyring: NVIDIA's signing key and list for the CUDA repository.
# cuDNN 7 is only in the older machine-learning repository; its Release is
# checked against NVIDIA's old (7fa2af80) and current keys.
# Pins: 10.2.89 is CUDA 10.2's release; libcublas10 10.2.2.89 is the cuBLAS
# of that release (what NVIDIA's own 10.2 images installed); cuDNN 7.6.5.32
# is the last cuDNN 7. nvcc and the headers are only there for their
# headers: cudnn.h includes the CUDA runtime headers.
RUN curl -fsSLO "$CUDA_REPO/cuda-keyring_1.0-1_all.deb" \
 && dpkg -i cuda-keyring_1.0-1_all.deb \
 && rm cuda-keyring_1.0-1_all.deb \
 && curl -fsSL "$ML_REPO/7fa2af80.pub" | gpg --dearmor > /tmp/ml.gpg \
 && cat /usr/share/keyrings/cuda-archive-keyring.gpg /tmp/ml.gpg \
        > /usr/share/keyrings/nvidia-ml.gpg \
 && echo "deb [signed-by=/usr/share/keyrings/nvidia-ml.gpg] $ML_REPO /" \
        > /etc/apt/sources.list.d/nvidia-ml.list \
 && apt-get update \
 && apt-get install -y --no-install-recommends \
        cuda-cudart-dev-10-2=10.2.89-1 \
        cuda-driver-dev-10-2=10.2.89-1 \
        cuda-misc-headers-10-2=10.2.89-1 \
        cuda-nvcc-10-2=10.2.89-1 \
        cuda-nvrtc-10-2=10.2.89-1 \
        libcublas10=10.2.2.89-1 \
        libcudnn7=7.6.5.32-1+cuda10.2 \
        libcudnn7-dev=7.6.5.32-1+cuda10.2 \
 && rm -rf /var/lib/apt/lists/*
# /opt/cuda-10.2: include/ (CUDA runtime headers + cudnn.h) and lib64/ with
# the libraries and the unversioned names libgpuarray and Theano open.
RUN mkdir -p /opt/cuda-10.2/include /opt/cuda-10.2/lib64 \
 && cp -a /usr/local/cuda-10.2/targets/x86_64-linux/include/. /opt/cuda-10.2/include/ \
 && cp -L /usr/include/cudnn.h /opt/cuda-10.2/include/cudnn.h \
 && for lib in libnvrtc.so.10.2 libnvrtc-builtins.so.10.2 libcublas.so.10 \
               libcublasLt.so.10 libcudnn.so.7; do \
        path="$(find / -xdev -name "$lib" -print -quit)"; \
        if [ -z "$path" ]; then echo "missing $lib" >&2; exit 1; fi; \
        cp -L "$path" /opt/cuda-10.2/lib64/; \
    done \
 && ln -s libnvrtc.so.10.2 /opt/cuda-10.2/lib64/libnvrtc.so \
 && ln -s libcublas.so.10 /opt/cuda-10.2/lib64/libcublas.so \
 && ln -s libcudnn.so.7 /opt/cuda-10.2/lib64/libcudnn.so

FROM gpu AS variant-cuda10
COPY --from=cuda10-libs /opt/cuda-10.2 /usr/local/cuda-10.2
# dnn.enabled=True: stop (rather than quietly use GpuCorrMM) if cuDNN does
# not work. cuda.root and dnn.base_path point Theano at the headers and
# libraries above (there is no nvcc on PATH for it to find them by).
ENV LD_LIBRARY_PATH=/opt/cuda-links:/usr/local/cuda-10.2/lib64 \
    NVIDIA_REQUIRE_CUDA=cuda>=10.2 \
    GCM_IMAGE_VARIANT=cuda10 \
    THEANO_FLAGS=device=cuda,floatX=float32,dnn.enabled=True,cuda.root=/usr/local/cuda-10.2,dnn.base_path=/usr/local/cuda-10.2,base_compiledir=/app/cache/theano

############################################################################
# cpu: the same image without CUDA (Theano's C back-end with OpenBLAS).
FROM base AS variant-cpu
ENV GCM_IMAGE_VARIANT=cpu \
    THEANO_FLAGS=device=cpu,floatX=float32,base_compiledir=/app/cache/theano

############################################################################
# The image: the project in /app, data and outputs on volumes.
# DL3006 (untagged image): variant-${VARIANT} is one of this file's stages,
# which hadolint cannot resolve through the build argument.
# hadolint ignore=DL3006
FROM variant-${VARIANT} AS final
WORKDIR /app
COPY . /app
# Build-time self-check: pins as installed, numpy not shadowed, pygpu and the
# CUDA libraries loadable, NVRTC compiling for the architectures the docs
# promise, cuDNN usable by Theano's compile (cuda10). Needs no GPU.
RUN python docker/check_image.py
# /app/cache/theano is Theano's compile cache (base_compiledir in
# THEANO_FLAGS): mount a named volume there (-v gcm-cache:/app/cache) to keep
# compiled ops between containers. Mode 1777 so `docker run --user` works.
RUN mkdir -p /app/data /app/runs /app/results /app/cache \
 && chmod 1777 /app/data /app/runs /app/results /app/cache
ENV MPLCONFIGDIR=/app/cache/matplotlib
VOLUME ["/app/data", "/app/runs", "/app/results"]
ENTRYPOINT ["/bin/sh", "/app/docker/entrypoint.sh"]
CMD ["python", "run_cifar10.py"]

# One image for every app process (workers, beat, bridge, command consumer, flower, CLI);
# docker-compose.yml picks the process with `command:`.
#
# Two stages: the builder has a compiler in case a pinned package has no wheel for this platform,
# the runtime stage gets only the finished virtualenv, so no toolchain ships with the signer.

FROM python:3.11-slim AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*

# A venv so the runtime stage can copy the whole install as one directory.
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /src

# Dependencies first, from the lock alone: this layer is reused until requirements.lock changes,
# so editing code does not reinstall ~100 packages.
COPY requirements.lock ./
RUN pip install -r requirements.lock

# Then the project itself. --no-deps: every dependency is already pinned by the lock above, and
# resolving again from pyproject's ranges could pull versions the lock did not test.
# .dockerignore keeps secrets/, .venv/, .git/ and the like out of this copy.
COPY . .
RUN pip install --no-deps .


FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/venv/bin:$PATH

# Not root: a compromised worker should not own the container. The uid is a build arg because
# compose file secrets (/run/secrets/wallet_master_key) are bind mounts that keep the host file's
# owner and mode, so the key file (chmod 600) is readable only if this uid owns it on the host.
ARG APP_UID=1000
RUN useradd --system --uid "${APP_UID}" --user-group --home-dir /home/wallet --create-home wallet

COPY --from=builder /opt/venv /opt/venv

# The installed package is what runs; nothing from the source tree is needed at run time.
WORKDIR /home/wallet
USER wallet

# Overridden by every compose service; a bare `docker run IMAGE` shows the CLI help.
CMD ["wallet", "--help"]

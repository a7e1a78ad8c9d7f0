# Ringing's container image: call-control, token-service, push-notifier, device-gateway and ringctl in one slim image.
#   docker build -t ringing:local .
# Build stage: the Swift toolchain and the C libraries' headers.
ARG SWIFT_VERSION=6.3
FROM swift:${SWIFT_VERSION}-bookworm AS build
RUN apt-get update \
    && apt-get install -y --no-install-recommends librabbitmq-dev libpq-dev pkg-config \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# Dependencies first, so that source changes do not refetch them.
COPY Package.swift ./
RUN swift package resolve
COPY Sources Sources
COPY Tests Tests
RUN swift build -c release --static-swift-stdlib \
    && mkdir /out \
    && cp "$(swift build -c release --show-bin-path)"/call-control /out/ \
    && cp "$(swift build -c release --show-bin-path)"/token-service /out/ \
    && cp "$(swift build -c release --show-bin-path)"/push-notifier /out/ \
    && cp "$(swift build -c release --show-bin-path)"/device-gateway /out/ \
    && cp -R "$(swift build -c release --show-bin-path)"/Ringing_DeviceGateway.resources /out/ \
    && cp "$(swift build -c release --show-bin-path)"/ringctl /out/

# Runtime stage: only the runtime libraries of rabbitmq-c and libpq.
FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends librabbitmq4 libpq5 ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --no-create-home ringing
COPY --from=build /out/ /usr/local/bin/
USER ringing
ENV RINGING_LOG_LEVEL=info
CMD ["call-control"]

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
# The products the image ships, one by one: a plain `swift build` also builds every other target,
# TestSupport included, the tests' helper that imports Testing, and swift-testing has no static
# module for --static-swift-stdlib ("no such module 'Testing'"; scripts/check-image).
RUN swift build -c release --static-swift-stdlib --product call-control \
    && swift build -c release --static-swift-stdlib --product token-service \
    && swift build -c release --static-swift-stdlib --product push-notifier \
    && swift build -c release --static-swift-stdlib --product device-gateway \
    && swift build -c release --static-swift-stdlib --product ringctl \
    && mkdir /out \
    && cp "$(swift build -c release --show-bin-path)"/call-control /out/ \
    && cp "$(swift build -c release --show-bin-path)"/token-service /out/ \
    && cp "$(swift build -c release --show-bin-path)"/push-notifier /out/ \
    && cp "$(swift build -c release --show-bin-path)"/device-gateway /out/ \
    && cp -R "$(swift build -c release --show-bin-path)"/Ringing_DeviceGateway.resources /out/ \
    && cp "$(swift build -c release --show-bin-path)"/ringctl /out/

# Runtime stage: only the runtime libraries of rabbitmq-c and libpq, and libcurl for ringctl
# (the client library's HTTP requests go through FoundationNetworking, which links libcurl.so.4
# from the build image's libcurl4-openssl-dev).
FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends librabbitmq4 libpq5 libcurl4 ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --no-create-home ringing
COPY --from=build /out/ /usr/local/bin/
USER ringing
ENV RINGING_LOG_LEVEL=info
CMD ["call-control"]

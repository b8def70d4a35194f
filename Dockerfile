# imbridge: a static binary on a distroless base, as a non-root user, with the embedded event log in
# a volume. make docker builds it (VERSION from git describe).
#
#   docker run -p 8080:8080 -p 9090:9090 -v imbridge-data:/var/lib/imbridge imbridge
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN deploy/build.sh /out "${VERSION}" && mkdir -p /out/state

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/imbridge /usr/local/bin/imbridge
# The embedded event log, writable by the non-root user (a new named volume takes this ownership);
# one container per volume (the bridge locks it).
COPY --from=build --chown=nonroot:nonroot /out/state /var/lib/imbridge
VOLUME /var/lib/imbridge
WORKDIR /var/lib/imbridge
USER nonroot:nonroot
EXPOSE 8080 9090
# imbridge healthcheck finds the bridge from IMBRIDGE_HTTP_ADDR and IMBRIDGE_TLS_CERT: give those
# settings as environment variables, not flags, or the check asks the default http://127.0.0.1:8080.
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s CMD ["/usr/local/bin/imbridge", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/imbridge"]
CMD ["serve", "--data-dir", "/var/lib/imbridge/data"]

# DelAuto: one static binary (operator and worker modes) on a distroless,
# non-root base.
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY api/ api/
COPY cmd/ cmd/
COPY controllers/ controllers/
COPY internal/ internal/
COPY workers/ workers/
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/delauto ./cmd/delauto

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/delauto /delauto
USER 65532:65532
ENTRYPOINT ["/delauto"]

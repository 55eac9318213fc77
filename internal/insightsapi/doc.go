// Package insightsapi is DelAuto's read API of delivery insights, served by
// `delauto api`: the paged delivery list and the analytics (overview,
// breakdown, time series) of one namespace at a time, as JSON under
// /api/v1/namespaces/{namespace}/, described by /openapi.json.
//
// Every request carries a Kubernetes bearer token: it is checked with a
// TokenReview, and the caller must be allowed to list deliveries.delauto.io
// in the namespace (SubjectAccessReview); both answers are cached briefly,
// keyed by a hash of the token (see KubeAuth).
//
// Answers are cached in Redis per namespace and normalized query; the key
// holds the namespace's insights.GenerationKey value, so a new outcome of
// the namespace makes every cached answer of it unreachable. Bodies over
// 1 KiB are gzip-compressed for clients that accept it, and every answer has
// an ETag that a client can send back in If-None-Match to get a 304.
package insightsapi

package insightsapi

import (
	"encoding/json"
	"net/http"
	"reflect"
	"strings"
	"sync"
	"time"

	"github.com/delauto/delauto/internal/insights"
)

// Version is the API's version in /openapi.json.
const Version = "1.0.0"

// schemaTypes are the named schemas of /openapi.json, made from the Go
// types the API encodes, so the document cannot drift from the answers.
var schemaTypes = map[string]reflect.Type{
	"DeliveryPage":     reflect.TypeFor[insights.DeliveryPage](),
	"DeliverySummary":  reflect.TypeFor[insights.DeliverySummary](),
	"Overview":         reflect.TypeFor[insights.Overview](),
	"Group":            reflect.TypeFor[insights.Group](),
	"Point":            reflect.TypeFor[insights.Point](),
	"Range":            reflect.TypeFor[RangeJSON](),
	"OverviewAnswer":   reflect.TypeFor[OverviewAnswer](),
	"BreakdownAnswer":  reflect.TypeFor[BreakdownAnswer](),
	"TimeseriesAnswer": reflect.TypeFor[TimeseriesAnswer](),
	"Error":            reflect.TypeFor[Error](),
}

// schemaOf is the JSON schema of t: a $ref for a named schema (unless
// inline), else its structure.
func schemaOf(t reflect.Type, inline bool) map[string]any {
	if !inline {
		for name, st := range schemaTypes {
			if st == t {
				return map[string]any{"$ref": "#/components/schemas/" + name}
			}
		}
	}
	switch {
	case t == reflect.TypeFor[time.Time]():
		return map[string]any{"type": "string", "format": "date-time"}
	case t.Kind() == reflect.String:
		return map[string]any{"type": "string"}
	case t.Kind() == reflect.Int32:
		return map[string]any{"type": "integer", "format": "int32"}
	case t.Kind() == reflect.Int || t.Kind() == reflect.Int64:
		return map[string]any{"type": "integer", "format": "int64"}
	case t.Kind() == reflect.Float64:
		return map[string]any{"type": "number", "format": "double"}
	case t.Kind() == reflect.Slice:
		return map[string]any{"type": "array", "items": schemaOf(t.Elem(), false)}
	case t.Kind() == reflect.Struct:
		props := map[string]any{}
		var required []string
		addFields(t, props, &required)
		s := map[string]any{"type": "object", "properties": props}
		if len(required) > 0 {
			s["required"] = required
		}
		return s
	}
	panic("insightsapi: no schema for " + t.String())
}

// addFields adds t's JSON fields (those of embedded structs inline).
func addFields(t reflect.Type, props map[string]any, required *[]string) {
	for f := range t.Fields() {
		if !f.IsExported() {
			continue
		}
		if f.Anonymous {
			addFields(f.Type, props, required)
			continue
		}
		name, opts, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "-" {
			continue
		}
		if name == "" {
			name = f.Name
		}
		props[name] = schemaOf(f.Type, false)
		if !strings.Contains(opts, "omitempty") {
			*required = append(*required, name)
		}
	}
}

func errorResponse(desc string) map[string]any {
	return map[string]any{"description": desc, "content": map[string]any{"application/json": map[string]any{
		"schema": map[string]any{"$ref": "#/components/schemas/Error"}}}}
}

// OpenAPI is the API's OpenAPI 3 document.
func OpenAPI() map[string]any {
	paths := map[string]any{}
	for _, rt := range routes {
		params := []any{map[string]any{"name": "namespace", "in": "path", "required": true,
			"description": "the Kubernetes namespace; the caller must be allowed to list deliveries.delauto.io in it",
			"schema":      map[string]any{"type": "string", "maxLength": 63, "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"}}}
		for _, p := range rt.params {
			pm := map[string]any{"name": p.name, "in": "query", "description": p.desc, "schema": p.schema}
			if p.name == "by" {
				pm["required"] = true
			}
			if p.example != "" {
				pm["example"] = p.example
			}
			params = append(params, pm)
		}
		paths[rt.pattern] = map[string]any{"get": map[string]any{
			"operationId": rt.op,
			"summary":     rt.summary,
			"parameters":  params,
			"responses": map[string]any{
				"200": map[string]any{
					"description": "the answer; gzip-compressed (Content-Encoding) when over 1 KiB and the client accepts gzip",
					"headers": map[string]any{
						"ETag":    map[string]any{"description": "hash of the body; send it back in If-None-Match", "schema": map[string]any{"type": "string"}},
						"X-Cache": map[string]any{"description": "hit when the answer came from the cache, else miss", "schema": map[string]any{"type": "string", "enum": []string{cacheHit, cacheMiss}}},
					},
					"content": map[string]any{"application/json": map[string]any{"schema": map[string]any{"$ref": "#/components/schemas/" + rt.schema}}},
				},
				"304": map[string]any{"description": "the answer has not changed since the ETag of If-None-Match"},
				"400": errorResponse("a parameter is wrong; parameter names it (a bad time, from not before to, a range longer than the most, an unknown by, a bad step, limit out of 1..500, a continue token not issued for this query, an unknown or repeated parameter)"),
				"401": errorResponse("no bearer token, or the Kubernetes API does not accept it (TokenReview)"),
				"403": errorResponse("the caller may not list deliveries.delauto.io in the namespace (SubjectAccessReview)"),
				"405": errorResponse("a method other than GET or HEAD"),
				"500": errorResponse("the query failed"),
				"503": errorResponse("the Kubernetes API could not check the token"),
				"504": errorResponse("the query took too long"),
			},
		}}
	}
	paths["/openapi.json"] = map[string]any{"get": map[string]any{
		"operationId": "openapi", "summary": "This document", "security": []any{},
		"responses": map[string]any{"200": map[string]any{"description": "the OpenAPI 3 document",
			"content": map[string]any{"application/json": map[string]any{"schema": map[string]any{"type": "object"}}}}},
	}}
	schemas := map[string]any{}
	for name, t := range schemaTypes {
		schemas[name] = schemaOf(t, true)
	}
	return map[string]any{
		"openapi": "3.0.3",
		"info": map[string]any{"title": "DelAuto delivery insights", "version": Version,
			"description": "Delivery lists and call analytics of a namespace. Authenticate with a Kubernetes bearer token (e.g. `kubectl create token`); the caller must be allowed to list deliveries.delauto.io in the namespace."},
		"paths":    paths,
		"security": []any{map[string]any{"kubernetesToken": []any{}}},
		"components": map[string]any{
			"schemas": schemas,
			"securitySchemes": map[string]any{"kubernetesToken": map[string]any{
				"type": "http", "scheme": "bearer", "description": "a Kubernetes ServiceAccount or user token, checked with TokenReview"}},
		},
	}
}

var openAPIAnswer = sync.OnceValue(func() *answer {
	b, err := json.MarshalIndent(OpenAPI(), "", "  ")
	if err != nil {
		panic(err)
	}
	return newAnswer(append(b, '\n'))
})

func serveOpenAPI(w http.ResponseWriter, r *http.Request) {
	openAPIAnswer().write(w, r, "")
}

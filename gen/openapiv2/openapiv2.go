// Package openapiv2 holds the OpenAPI (Swagger 2.0) document that buf generates from proto/ (the
// proto comments are its documentation); the gateway serves it at /openapi.json. This file is the
// one in gen/ written by hand: make generate keeps it.
package openapiv2

import _ "embed"

// JSON is imbridge.swagger.json.
//
//go:embed imbridge.swagger.json
var JSON []byte

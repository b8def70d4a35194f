// Package e2e holds end-to-end tests of a whole in-process bridge: callbacks posted over HTTP as the IM
// servers send them, events received over gRPC, answers checked byte for byte.
package e2e

package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"time"
)

// healthcheck asks a bridge's /readyz, for container health checks where no curl is installed: exit
// status 0 when ready.
func healthcheck(ctx context.Context, args []string, out io.Writer) error {
	fs := newFlagSet("healthcheck", "[flags]")
	url := fs.String("url", "", "the bridge's readiness URL (default: this host's bridge as IMBRIDGE_HTTP_ADDR and IMBRIDGE_TLS_CERT say: http://127.0.0.1:8080/readyz, https with TLS)")
	insecure := fs.Bool("insecure", false, "do not verify an https URL's certificate (a container checking itself by 127.0.0.1; the default URL does not)")
	timeout := fs.Duration("timeout", 3*time.Second, "how long to wait for the answer")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *url == "" {
		// The container's own bridge, read from the environment serve reads.
		port := "8080"
		if _, p, err := net.SplitHostPort(os.Getenv("IMBRIDGE_HTTP_ADDR")); err == nil && p != "" {
			port = p
		}
		scheme := "http"
		if os.Getenv("IMBRIDGE_TLS_CERT") != "" {
			scheme, *insecure = "https", true // its certificate names the service, not 127.0.0.1
		}
		*url = scheme + "://127.0.0.1:" + port + "/readyz"
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, *url, nil)
	if err != nil {
		return err
	}
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: *insecure}}} //nolint:gosec // asked for: a self-check by address
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("not ready: %w", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("not ready: %d %s", resp.StatusCode, body)
	}
	fmt.Fprintf(out, "%s\n", body)
	return nil
}

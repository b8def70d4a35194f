package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"time"
)

// healthcheck asks a bridge's /readyz, for container health checks where no curl is installed: exit
// status 0 when ready.
func healthcheck(ctx context.Context, args []string, out io.Writer) error {
	fs := newFlagSet("healthcheck", "[flags]")
	url := fs.String("url", "http://127.0.0.1:8080/readyz", "the bridge's readiness URL")
	insecure := fs.Bool("insecure", false, "do not verify an https URL's certificate (a container checking itself by 127.0.0.1)")
	timeout := fs.Duration("timeout", 3*time.Second, "how long to wait for the answer")
	if err := parseFlags(fs, args); err != nil {
		return err
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

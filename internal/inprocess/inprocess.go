// Package inprocess runs an imbridge in the calling process, for examples and tests that cannot
// take a testing.T (Example functions) or that run a service against a real bridge.
package inprocess

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/imbridge/imbridge/app"
)

// Bridge is an imbridge run in this process on loopback ports the OS picks, with its embedded log
// in a temporary directory.
type Bridge struct {
	GRPC, HTTP string // addresses
	stop       func()
}

// Stop shuts the bridge down and removes its log.
func (b *Bridge) Stop() { b.stop() }

// Start starts a bridge; config, if not empty, is its --config file's content (policies, callers,
// subscribers), and each of with changes its settings before it starts.
func Start(config string, with ...func(*app.Config)) (*Bridge, error) {
	dir, err := os.MkdirTemp("", "imbridge-client")
	if err != nil {
		return nil, err
	}
	cfg := app.Config{
		HTTPAddr: "127.0.0.1:0", GRPCAddr: "127.0.0.1:0", DataDir: filepath.Join(dir, "data"),
		Logger: slog.New(slog.DiscardHandler), NoAccessLog: true, ShutdownTimeout: 5 * time.Second,
	}
	if config != "" {
		cfg.ConfigFile = filepath.Join(dir, "config.yaml")
		if err := os.WriteFile(cfg.ConfigFile, []byte(config), 0o600); err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
	}
	for _, w := range with {
		w(&cfg)
	}
	b := &Bridge{}
	listening := make(chan struct{})
	cfg.OnListening = func(h, g net.Addr) {
		b.HTTP, b.GRPC = h.String(), g.String()
		close(listening)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- app.Run(ctx, cfg) }()
	select {
	case <-listening:
	case err := <-done:
		cancel()
		os.RemoveAll(dir)
		return nil, fmt.Errorf("bridge: %v", err)
	}
	b.stop = sync.OnceFunc(func() {
		cancel()
		<-done
		os.RemoveAll(dir)
	})
	return b, nil
}

// PostOpenIM sends an OpenIM callback and returns the HTTP status and the answer's fields.
func (b *Bridge) PostOpenIM(command, body string) (int, map[string]any, error) {
	hc := http.Client{Timeout: 30 * time.Second}
	resp, err := hc.Post("http://"+b.HTTP+"/openim/"+command, "application/json", bytes.NewBufferString(body))
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, nil, err
	}
	var answer map[string]any
	if err := json.Unmarshal(raw, &answer); err != nil {
		return resp.StatusCode, nil, fmt.Errorf("answer %q: %w", raw, err)
	}
	return resp.StatusCode, answer, nil
}

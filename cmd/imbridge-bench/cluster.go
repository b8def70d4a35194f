package main

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"
)

// clusterIngest measures after-callbacks through one bridge on a one-node NATS server against two
// bridges on a three-node JetStream cluster (the stream replicated three times), on this machine.
// The NATS servers run in this process, beside the load generator: on a small machine every node
// and bridge shares the same cores, so the figure shows that the cluster works and what replication
// costs here, not what separate machines would do.
func clusterIngest(ctx context.Context, cfg config, dir string) (single, cluster loadResult, err error) {
	one, err := startNATSNodes(filepath.Join(dir, "single"), 1)
	if err != nil {
		return single, cluster, err
	}
	br, err := startBridge(cfg.Bridge, filepath.Join(dir, "single-bridge"), false, false, "--nats-url", one.urls)
	if err != nil {
		one.stop()
		return single, cluster, err
	}
	single, err = warmAndLoad(ctx, cfg, br.httpAddr, afterRequests(br.httpAddr, nil), cfg.Conns, 0)
	br.stop()
	one.stop()
	if err != nil {
		return single, cluster, err
	}

	three, err := startNATSNodes(filepath.Join(dir, "cluster"), 3)
	if err != nil {
		return single, cluster, err
	}
	defer three.stop()
	var bridges []*server
	defer func() {
		for _, b := range bridges {
			b.stop()
		}
	}()
	for i := range 2 {
		b, err := startBridge(cfg.Bridge, filepath.Join(dir, "bridge"+strconv.Itoa(i)), false, false, "--nats-url", three.urls)
		if err != nil {
			return single, cluster, err
		}
		bridges = append(bridges, b)
	}
	// Half the connections to each bridge, at once.
	results := make([]loadResult, len(bridges))
	errs := make([]error, len(bridges))
	var wg sync.WaitGroup
	for i, b := range bridges {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i], errs[i] = warmAndLoad(ctx, cfg, b.httpAddr, afterRequests(b.httpAddr, nil), cfg.Conns/2, 0)
		}()
	}
	wg.Wait()
	for i, r := range results {
		if errs[i] != nil {
			return single, cluster, errs[i]
		}
		cluster.Requests += r.Requests
		cluster.Errors += r.Errors
		cluster.Elapsed = max(cluster.Elapsed, r.Elapsed)
		cluster.Latencies = append(cluster.Latencies, r.Latencies...)
	}
	slices.Sort(cluster.Latencies)
	return single, cluster, nil
}

// natsNodes are NATS servers with JetStream, in this process.
type natsNodes struct {
	nodes []*natsserver.Server
	urls  string // client URLs, comma-separated
}

// startNATSNodes starts n JetStream servers on loopback ports the OS picks; more than one form a
// cluster (every node routes to every node; route ports are picked first, as a JetStream cluster
// needs its routes configured up front).
func startNATSNodes(dir string, n int) (*natsNodes, error) {
	var routes []string
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		routes = append(routes, "nats://"+l.Addr().String())
		l.Close()
	}
	nn := &natsNodes{}
	for i := range n {
		opts := &natsserver.Options{
			ServerName: "bench" + strconv.Itoa(i), Host: "127.0.0.1", Port: -1, NoSigs: true, NoLog: true,
			JetStream: true, StoreDir: filepath.Join(dir, strconv.Itoa(i)), MaxPayload: 4 << 20,
		}
		if n > 1 {
			_, port, _ := net.SplitHostPort(strings.TrimPrefix(routes[i], "nats://"))
			p, _ := strconv.Atoi(port)
			opts.Cluster = natsserver.ClusterOpts{Name: "bench", Host: "127.0.0.1", Port: p}
			opts.Routes = natsserver.RoutesFromStr(strings.Join(routes, ","))
		}
		ns, err := natsserver.NewServer(opts)
		if err != nil {
			nn.stop()
			return nil, err
		}
		ns.Start()
		nn.nodes = append(nn.nodes, ns)
	}
	var urls []string
	for i, ns := range nn.nodes {
		if !ns.ReadyForConnections(30 * time.Second) {
			nn.stop()
			return nil, fmt.Errorf("nats node %d not ready", i)
		}
		urls = append(urls, ns.ClientURL())
	}
	nn.urls = strings.Join(urls, ",")
	return nn, nil
}

func (nn *natsNodes) stop() {
	for _, ns := range nn.nodes {
		ns.Shutdown()
		ns.WaitForShutdown()
	}
}

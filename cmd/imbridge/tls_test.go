package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/imbridge/imbridge/auth"
	pb "github.com/imbridge/imbridge/gen/imbridge/v1"
)

// testCA issues certificates for the TLS tests.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
	pem  []byte
}

func newTestCA(t *testing.T) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &testCA{cert: cert, key: key, pool: pool, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// issue returns a certificate for cn (a server's for 127.0.0.1, or a client's) as PEM and as a
// tls.Certificate.
func (ca *testCA) issue(t *testing.T, cn string, serial int64, server bool) (certPEM, keyPEM []byte, cert tls.Certificate) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), KeyUsage: x509.KeyUsageDigitalSignature}
	if server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.IPAddresses = []net.IP{net.ParseIP("127.0.0.1")}
	} else {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM = pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})
	cert, err = tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return certPEM, keyPEM, cert
}

func writeFile(t *testing.T, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestServeTLS: with --tls-cert and --tls-key both ports speak TLS; with --client-ca a subscriber may
// authenticate with its certificate (cert_cn) instead of a token; a new certificate is served after
// SIGHUP without a restart.
func TestServeTLS(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ca := newTestCA(t)
	certFile, keyFile, caFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem"), filepath.Join(dir, "ca.pem")
	certPEM, keyPEM, _ := ca.issue(t, "bridge", 10, true)
	writeFile(t, certFile, certPEM)
	writeFile(t, keyFile, keyPEM)
	writeFile(t, caFile, ca.pem)
	tok, sum := auth.NewToken()
	cfg := writePolicies(t, `
subscribers:
  - {name: svc-a, cert_cn: svc-a, scopes: {groups: [a]}}
  - {name: tailer, token_sha256: `+sum+`, scopes: {tail: true}}
`)
	p := startServe(t, t.TempDir(), "--config", cfg, "--tls-cert", certFile, "--tls-key", keyFile, "--client-ca", caFile)

	// HTTPS for the IM servers (send does what they do); plain HTTP is not answered as a callback.
	var out bytes.Buffer
	if err := send(t.Context(), []string{"--url", "https://" + p.httpAddr, "--ca", caFile, "openim-after-quit-group"}, &out); err != nil {
		t.Errorf("https callback: %v\n%s", err, out.String())
	}
	if resp, err := http.Post("http://"+p.httpAddr+"/openim/callbackAfterQuitGroupCommand", "application/json", strings.NewReader(`{}`)); err == nil {
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			t.Error("plain HTTP callback answered 200")
		}
	}

	// gRPC: a client certificate names the subscriber.
	_, _, svcA := ca.issue(t, "svc-a", 20, false)
	_, _, stranger := ca.issue(t, "stranger", 21, false)
	subscribe := func(clientCert *tls.Certificate, token string, sub *pb.Subscription) error {
		tc := &tls.Config{RootCAs: ca.pool}
		if clientCert != nil {
			tc.Certificates = []tls.Certificate{*clientCert}
		}
		conn, err := grpc.NewClient(p.grpcAddr, grpc.WithTransportCredentials(credentials.NewTLS(tc)))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
		defer cancel()
		if token != "" {
			ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
		}
		s, err := pb.NewEventServiceClient(conn).Subscribe(ctx)
		if err != nil {
			return err
		}
		_ = s.Send(&pb.SubscribeRequest{Request: &pb.SubscribeRequest_Subscription{Subscription: sub}})
		_, err = s.Recv()
		return err
	}
	for _, tt := range []struct {
		name  string
		cert  *tls.Certificate
		token string
		sub   *pb.Subscription
		want  codes.Code
	}{
		{"certificate of a subscriber", &svcA, "", &pb.Subscription{Group: "a"}, codes.OK},
		{"certificate, out of scope", &svcA, "", &pb.Subscription{Group: "b"}, codes.PermissionDenied},
		{"certificate of no subscriber", &stranger, "", &pb.Subscription{Group: "a"}, codes.Unauthenticated},
		{"neither", nil, "", &pb.Subscription{Group: "a"}, codes.Unauthenticated},
		{"token", nil, tok, &pb.Subscription{}, codes.OK},
	} {
		if err := subscribe(tt.cert, tt.token, tt.sub); status.Code(err) != tt.want {
			t.Errorf("%s: %v; want %v", tt.name, err, tt.want)
		}
	}

	// A renewed certificate, served after SIGHUP.
	certPEM, keyPEM, _ = ca.issue(t, "bridge", 11, true)
	writeFile(t, keyFile, keyPEM)
	writeFile(t, certFile, certPEM)
	if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	p.waitLog(t, "tls certificate reloaded")
	conn, err := tls.Dial("tcp", p.httpAddr, &tls.Config{RootCAs: ca.pool})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if serial := conn.ConnectionState().PeerCertificates[0].SerialNumber.Int64(); serial != 11 {
		t.Errorf("served certificate %d after SIGHUP; want the renewed one, 11", serial)
	}
}

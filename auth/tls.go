package auth

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"sync"
)

// CertFiles serves a certificate and key from files, and takes them again when they change
// (Reload), so that a renewed certificate needs no restart.
type CertFiles struct {
	certFile, keyFile string

	mu   sync.RWMutex
	cert *tls.Certificate // guarded by mu
	pem  []byte           // the certificate file's content when loaded; guarded by mu
}

// LoadCert reads a PEM certificate (chain) and key.
func LoadCert(certFile, keyFile string) (*CertFiles, error) {
	c := &CertFiles{certFile: certFile, keyFile: keyFile}
	if _, err := c.Reload(); err != nil {
		return nil, err
	}
	return c, nil
}

// Reload reads the files again and reports whether the certificate changed. On an error (a file
// half written, a key that does not match) the certificate in use stays.
func (c *CertFiles) Reload() (bool, error) {
	pemBytes, err := os.ReadFile(c.certFile)
	if err != nil {
		return false, fmt.Errorf("tls certificate: %w", err)
	}
	c.mu.RLock()
	same := bytes.Equal(pemBytes, c.pem)
	c.mu.RUnlock()
	if same {
		return false, nil
	}
	keyBytes, err := os.ReadFile(c.keyFile)
	if err != nil {
		return false, fmt.Errorf("tls key: %w", err)
	}
	cert, err := tls.X509KeyPair(pemBytes, keyBytes)
	if err != nil {
		return false, fmt.Errorf("tls certificate %s and key %s: %w", c.certFile, c.keyFile, err)
	}
	c.mu.Lock()
	c.cert, c.pem = &cert, pemBytes
	c.mu.Unlock()
	return true, nil
}

// GetCertificate is tls.Config.GetCertificate: the certificate last loaded.
func (c *CertFiles) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.cert, nil
}

// ServerTLS is the TLS configuration of a listener serving c. With clientCAs, a client may present
// a certificate signed by one of them (subscribers authenticated by certificate, Subscriber.CertCN);
// one that presents another is refused in the handshake.
func ServerTLS(c *CertFiles, clientCAs *x509.CertPool) *tls.Config {
	cfg := &tls.Config{GetCertificate: c.GetCertificate, MinVersion: tls.VersionTLS12}
	if clientCAs != nil {
		cfg.ClientCAs = clientCAs
		cfg.ClientAuth = tls.VerifyClientCertIfGiven
	}
	return cfg
}

// LoadCertPool reads PEM CA certificates.
func LoadCertPool(file string) (*x509.CertPool, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("client CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, errors.New("client CA " + file + ": no PEM certificate in it")
	}
	return pool, nil
}

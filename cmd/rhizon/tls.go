package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"

	"github.com/spf13/pflag"

	"github.com/rhizon/rhizon/client"
)

// serverTLS loads the node's certificate and key for its listeners (gRPC,
// HTTP, Raft, NATS); nil without --tls-cert.
func serverTLS(certFile, keyFile, caFile string) (*tls.Config, error) {
	switch {
	case certFile == "" && keyFile == "" && caFile == "":
		return nil, nil
	case certFile == "" && keyFile == "":
		return nil, errors.New("--tls-ca needs --tls-cert and --tls-key: a node calls its peers over TLS only when it serves TLS itself")
	case certFile == "" || keyFile == "":
		return nil, errors.New("--tls-cert and --tls-key go together: the node serves TLS with both or neither")
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("--tls-cert %s / --tls-key %s: %w", certFile, keyFile, err)
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}, nil
}

// clientTLS is how a client verifies the gateways' certificates: with the
// CA certificates in caFile, or the system's roots when caFile is empty.
func clientTLS(caFile string) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if caFile == "" {
		return cfg, nil
	}
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("--tls-ca: %w", err)
	}
	cfg.RootCAs = x509.NewCertPool()
	if !cfg.RootCAs.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("--tls-ca %s: no PEM certificate in it", caFile)
	}
	return cfg, nil
}

// tlsClientFlags are a client command's --tls and --tls-ca.
type tlsClientFlags struct {
	on bool
	ca string
}

func (t *tlsClientFlags) register(fs *pflag.FlagSet) {
	fs.BoolVar(&t.on, "tls", false, "connect with TLS, verifying the node's certificate with the system's roots (RHIZON_TLS)")
	fs.StringVar(&t.ca, "tls-ca", "", "connect with TLS, verifying the node's certificate with the CA certificates in this PEM file (RHIZON_TLS_CA)")
}

// config is the TLS configuration the flags ask for: nil for plaintext.
func (t *tlsClientFlags) config() (*tls.Config, error) {
	if !t.on && t.ca == "" {
		return nil, nil
	}
	return clientTLS(t.ca)
}

// options are the client options the flags ask for: none for plaintext.
func (t *tlsClientFlags) options() ([]client.Option, error) {
	cfg, err := t.config()
	if cfg == nil || err != nil {
		return nil, err
	}
	return []client.Option{client.WithTLS(cfg)}, nil
}

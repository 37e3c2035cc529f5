// Package pki issues the certificates a Directorate cluster runs with: a
// cluster CA, director certificates (server and client use) and client
// certificates for clusterctl. `clusterd tls init` uses it, and so do the
// tests that run raft and the API over real TLS.
package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"time"
)

// CA is a certificate authority that can issue certificates.
type CA struct {
	Cert *x509.Certificate
	key  crypto.Signer
}

// Issued is a certificate and its private key, PEM-encoded.
type Issued struct {
	CertPEM []byte
	KeyPEM  []byte
}

// NewCA creates a self-signed CA named name, valid from now for validFor.
func NewCA(name string, validFor time.Duration) (*CA, Issued, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, Issued{}, fmt.Errorf("generate CA key: %w", err)
	}
	serial, err := serialNumber()
	if err != nil {
		return nil, Issued{}, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: name, Organization: []string{"Directorate"}},
		NotBefore:             now.Add(-time.Minute),
		NotAfter:              now.Add(validFor),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, Issued{}, fmt.Errorf("create CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, Issued{}, fmt.Errorf("parse CA certificate: %w", err)
	}
	keyPEM, err := encodeKey(key)
	if err != nil {
		return nil, Issued{}, err
	}
	return &CA{Cert: cert, key: key}, Issued{CertPEM: encodeCert(der), KeyPEM: keyPEM}, nil
}

// LoadCA reads a CA back from its PEM certificate and key, to issue more
// certificates (a new director, a renewal).
func LoadCA(certPEM, keyPEM []byte) (*CA, error) {
	cb, _ := pem.Decode(certPEM)
	if cb == nil || cb.Type != "CERTIFICATE" {
		return nil, errors.New("CA certificate: no PEM CERTIFICATE block")
	}
	cert, err := x509.ParseCertificate(cb.Bytes)
	if err != nil {
		return nil, fmt.Errorf("CA certificate: %w", err)
	}
	kb, _ := pem.Decode(keyPEM)
	if kb == nil {
		return nil, errors.New("CA key: no PEM block")
	}
	k, err := x509.ParsePKCS8PrivateKey(kb.Bytes)
	if err != nil {
		return nil, fmt.Errorf("CA key: %w", err)
	}
	signer, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("CA key: %T cannot sign", k)
	}
	if !cert.IsCA {
		return nil, errors.New("CA certificate: not a CA")
	}
	return &CA{Cert: cert, key: signer}, nil
}

// Request describes a certificate to issue.
type Request struct {
	CommonName string
	DNSNames   []string
	IPs        []net.IP
	// Server and Client select the extended key usages.
	Server, Client bool
	ValidFor       time.Duration
}

// Issue signs a new certificate with a fresh P-256 key.
func (ca *CA) Issue(r Request) (Issued, error) {
	if !r.Server && !r.Client {
		return Issued{}, errors.New("issue certificate: neither server nor client use requested")
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return Issued{}, fmt.Errorf("generate key for %s: %w", r.CommonName, err)
	}
	serial, err := serialNumber()
	if err != nil {
		return Issued{}, err
	}
	var usage []x509.ExtKeyUsage
	if r.Server {
		usage = append(usage, x509.ExtKeyUsageServerAuth)
	}
	if r.Client {
		usage = append(usage, x509.ExtKeyUsageClientAuth)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: r.CommonName, Organization: []string{"Directorate"}},
		NotBefore:    now.Add(-time.Minute),
		NotAfter:     now.Add(r.ValidFor),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  usage,
		DNSNames:     r.DNSNames,
		IPAddresses:  r.IPs,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, key.Public(), ca.key)
	if err != nil {
		return Issued{}, fmt.Errorf("sign certificate for %s: %w", r.CommonName, err)
	}
	keyPEM, err := encodeKey(key)
	if err != nil {
		return Issued{}, err
	}
	return Issued{CertPEM: encodeCert(der), KeyPEM: keyPEM}, nil
}

func serialNumber() (*big.Int, error) {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return nil, fmt.Errorf("serial number: %w", err)
	}
	return n, nil
}

func encodeCert(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func encodeKey(k crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return nil, fmt.Errorf("encode private key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

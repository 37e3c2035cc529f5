package pki

import (
	"crypto/x509"
	"encoding/pem"
	"net"
	"testing"
	"time"
)

func TestIssueAndReload(t *testing.T) {
	ca, files, err := NewCA("test CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	again, err := LoadCA(files.CertPEM, files.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	iss, err := again.Issue(Request{CommonName: "d1", DNSNames: []string{"director.directorate"},
		IPs: []net.IP{net.IPv4(10, 0, 0, 1)}, Server: true, Client: true, ValidFor: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(iss.CertPEM)
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	for _, u := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
		if _, err := cert.Verify(x509.VerifyOptions{Roots: pool, DNSName: "director.directorate", KeyUsages: []x509.ExtKeyUsage{u}}); err != nil {
			t.Fatalf("a certificate issued by the reloaded CA does not verify against the original: %v", err)
		}
	}
	if cert.IsCA || len(cert.IPAddresses) != 1 {
		t.Fatalf("issued certificate: CA %v, IPs %v", cert.IsCA, cert.IPAddresses)
	}
}

func TestRefusals(t *testing.T) {
	ca, files, err := NewCA("test CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ca.Issue(Request{CommonName: "x", ValidFor: time.Hour}); err == nil {
		t.Error("a certificate with no usage was issued")
	}
	leaf, err := ca.Issue(Request{CommonName: "x", Client: true, ValidFor: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := LoadCA(leaf.CertPEM, leaf.KeyPEM); err == nil {
		t.Error("a leaf certificate was loaded as a CA")
	}
	if _, err := LoadCA(files.CertPEM, []byte("not PEM")); err == nil {
		t.Error("a CA without its key was loaded")
	}
}

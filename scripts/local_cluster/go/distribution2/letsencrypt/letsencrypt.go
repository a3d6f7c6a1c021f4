// Package letsencrypt stands in for rsc.io/letsencrypt, which the Go module proxy
// does not serve. distribution v2.8 calls it only when its config asks for
// Let's Encrypt (http.tls.letsencrypt), which the local cluster never does; this
// stand-in refuses that, loudly, instead of reaching out to the internet.
package letsencrypt

import (
	"crypto/tls"
	"errors"
)

var errUnavailable = errors.New("letsencrypt is not built into this registry (offline build)")

// Manager has the methods distribution calls.
type Manager struct{}

func (m *Manager) CacheFile(string) error                   { return errUnavailable }
func (m *Manager) Registered() bool                         { return false }
func (m *Manager) Register(string, func(string) bool) error { return errUnavailable }
func (m *Manager) SetHosts([]string)                        {}
func (m *Manager) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return nil, errUnavailable
}

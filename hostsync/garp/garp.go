// Package garp sends gratuitous ARP for a VIP on behalf of its new owner and
// listens for the gratuitous ARP that keepalived sends, so hostsync learns a
// move even when the guest's agent is down.
package garp

"""A real, throwaway Kubernetes control plane (etcd + kube-apiserver) on loopback."""

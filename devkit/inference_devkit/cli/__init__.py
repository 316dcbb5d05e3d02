"""The development kit's subcommands of ``inference-operator``, registered through the
``inference_operator.commands`` entry point (devkit/pyproject.toml)."""

# name: (module, help)
COMMANDS = {
    "dev": ("inference_devkit.cli.dev",
            "local control plane + emulator + gateway + operator"),
    "generate": ("inference_devkit.cli.generate",
                 "re-render every generated file of the repository"),
    "controlplane": ("inference_devkit.cli.controlplane",
                     "start a throwaway kube-apiserver + etcd on loopback until Ctrl-C"),
    "cluster": ("inference_devkit.cli.cluster",
                "a control plane plus one real node, the project's image built and loaded, "
                "until Ctrl-C"),
}

# Sourced by scripts/try and scripts/install: find a Rust toolchain new
# enough for the workspace before anything on the host is changed. Sets
# $cargo, or says what is missing and exits 1.
#   find_cargo TOP
find_cargo() {
    local top=$1 wanted found home
    wanted=$(sed -n 's/^rust-version = "\(.*\)"$/\1/p' "$top/Cargo.toml")
    cargo=$(command -v cargo || true)
    if [ -z "$cargo" ]; then
        # Where rustup puts it: the caller's, or sudo's caller's, ~/.cargo/bin.
        for home in "${CARGO_HOME:-}" "$HOME/.cargo" \
            "$(getent passwd "${SUDO_USER:-}" 2>/dev/null | cut -d: -f6)/.cargo"; do
            if [ -n "$home" ] && [ -x "$home/bin/cargo" ]; then
                cargo=$home/bin/cargo
                export PATH="$home/bin:$PATH"
                break
            fi
        done
    fi
    if [ -z "$cargo" ]; then
        echo "error: no Rust toolchain: cargo is neither on PATH nor in ~/.cargo/bin." >&2
        echo "       Install Rust $wanted or newer (https://rustup.rs) and run this again; nothing was changed." >&2
        exit 1
    fi
    found=$("$cargo" --version | awk '{print $2}')
    if ! printf '%s\n%s\n' "$wanted" "${found%%-*}" | sort -V -C; then
        echo "error: $cargo is Rust $found; hermetic needs $wanted or newer." >&2
        echo "       Update it (rustup update) and run this again; nothing was changed." >&2
        exit 1
    fi
    if ! command -v cc >/dev/null; then
        echo "error: no C compiler (cc): Rust links through it. Install gcc and run this again; nothing was changed." >&2
        exit 1
    fi
}

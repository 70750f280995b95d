"""desktop-lite: a light, real desktop speaking OSWorld's guest API (image build and process mode)."""

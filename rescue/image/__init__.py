"""The rescue image: build it (rescue-image build), describe it, write it."""

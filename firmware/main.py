# Boot entry of the fieldproof sensor node: run the node with the wiring in config.py.
import fpnode

if __name__ == "__main__":
    fpnode.main()

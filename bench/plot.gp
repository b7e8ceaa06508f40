# Draws bench.png from the files pqscope_bench writes. Call: gnuplot -e "dir='results'" plot.gp
if (!exists("dir")) dir = "results"

# png, not pngcairo: gnuplot-nox may come without cairo.
set terminal png size 1600,600 font ",10"
set output dir."/bench.png"
set datafile missing "NaN"
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set boxwidth 0.9
set key top left maxrows 3
set grid ytics
set xtics nomirror
set multiplot layout 1,2 title "pqscope benchmark (".system("date +%Y-%m-%d").")"

set title "One client via PgBouncer: median µs per transaction (log scale)"
set logscale y
set yrange [50:*]
set ylabel "µs per transaction"
plot dir."/plot.dat" using 2:xtic(1) title "pqscope" lc rgb "#1b9e77", \
     "" using 3 title "naive libpq" lc rgb "#d95f02", \
     "" using 4 title "floor libpq (N + 1)" lc rgb "#7570b3", \
     "" using 5 title "libpqxx" lc rgb "#e7298a", \
     "" using 6 title "pqscope batched" lc rgb "#66a61e", \
     "" using 7 title "floor1 libpq (one round trip)" lc rgb "#e6ab02"

set title "Contended transfer through PgBouncer and direct (clients: see bench.md): transactions per second"
unset logscale y
set yrange [0:*]
set offsets 0, 0, graph 0.3, 0  # room above the tallest bar for the key
set ylabel "transactions / s"
plot dir."/contended.dat" using 2:xtic(1) title "pqscope" lc rgb "#1b9e77", \
     "" using 3 title "naive libpq" lc rgb "#d95f02", \
     "" using 4 title "floor libpq (N + 1)" lc rgb "#7570b3", \
     "" using 5 title "libpqxx" lc rgb "#e7298a", \
     "" using 6 title "pqscope batched" lc rgb "#66a61e", \
     "" using 7 title "floor1 libpq (one round trip)" lc rgb "#e6ab02"
unset multiplot
